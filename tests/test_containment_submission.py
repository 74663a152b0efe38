"""Containment (issue #19) for harness.submission and harness.text: every attack built for real.

Each test writes the hostile manifest, archive or folder to disk (real zip/tar files, hand-written
tar headers, real symbolic and hard links, FIFOs) and checks that ``load`` / ``copy_tree_nofollow``
answer ``invalid_submission`` with one bounded, printable line, fast, and that nothing outside the
submission changed.
"""

import gzip
import io
import json
import os
import random
import resource
import shutil
import stat
import tarfile
import time
import zipfile

import pytest

from harness.errors import SubmissionFailure
from harness.submission import load, manifest_problems
from harness.submission.archive import MAX_TAR_HEADER_CHAIN, ArchiveLimits
from harness.submission.core import content_sha256, copy_tree_nofollow
from harness.submission.manifest import DEFAULT_MAX_LATENT_DIM, MANIFEST_SCHEMA, MAX_NESTING, parse_manifest
from harness.text import is_safe, quoted, safe_lines, safe_text
import hostile

MAX_MESSAGE = 1000


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("good") / "sub")


@pytest.fixture
def folder(good, tmp_path):
    dest = tmp_path / "sub"
    shutil.copytree(good, dest)
    return dest


def _invalid(path, *, match, **kw):
    """load(path) fails as invalid_submission with ``match`` in a bounded, printable message."""
    t0 = time.monotonic()
    with pytest.raises(SubmissionFailure) as info:
        load(path, **kw)
    assert time.monotonic() - t0 < 2.0
    err = info.value
    assert err.kind == "invalid_submission"
    assert match in err.message, err.message
    assert len(err.message) <= MAX_MESSAGE and is_safe(err.message), err.message
    return err


def _write_raw_manifest(folder, text):
    (folder / "submission.json").write_bytes(text.encode() if isinstance(text, str) else text)
    return str(folder)


def _manifest_text(**overrides):
    return json.dumps(hostile.manifest(**overrides))


# --- harness.text --------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "a\x9b31mb", "\x00\x7f", "x\u202ey",
                                    "\u2066iso\u2069", "cr\roverwrite", "\udcff"])
def test_safe_text_removes_every_control(attack):
    out = safe_text(attack)
    assert is_safe(out)
    assert not any(c in out for c in "\x1b\x07\x9b\x00\x7f\u202e\u2066\u2069\r\udcff")
    out.encode("utf-8")  # a UTF-8 terminal can print it


def test_safe_text_spaces_escapes_and_truncation():
    assert safe_text("a\nb\tc") == "a b c"
    assert safe_text("\x1b[2J") == "\\x1b[2J"
    assert safe_text("\u202e") == "\\u202e"
    assert safe_text("plain text, unchanged") == "plain text, unchanged"
    assert safe_text("x" * 500, 200) == "x" * 197 + "..." and len(safe_text("x" * 500, 200)) == 200
    assert safe_text("abcdef", 2) == "ab"
    assert safe_text(ValueError("boom\n")) == "boom "
    assert quoted("evil\x1b]0;t\x07", 40) == "'evil\\x1b]0;t\\x07'"


def test_safe_lines_keeps_line_breaks_only():
    out = safe_lines("line 1\r\nline 2\n\tindented\x1b[31m red\rback", 1000)
    assert out == "line 1\nline 2\n\tindented\\x1b[31m red back"
    assert len(safe_lines("y\n" * 1000, 50)) == 50


# --- manifest: parser bounds (nesting, numbers, keys, surrogates) ------------------------------------

@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,
    '{"extra": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}",
    "[" * 100_000,  # unterminated as well
], ids=["arrays", "objects-in-extra", "unterminated"])
def test_deeply_nested_manifest(folder, text):
    _invalid(_write_raw_manifest(folder, text), match=f"more than {MAX_NESTING} deep")


def test_brackets_inside_strings_are_not_nesting(folder):
    m = hostile.manifest(description='[{"' * 300 + '\\"]]]')
    sub = load(_write_raw_manifest(folder, json.dumps(m)))
    assert sub.manifest["description"].startswith("[{")


@pytest.mark.parametrize("literal,match", [
    ("1" * 5000, "integer of 5000 characters"),
    ("-" + "9" * 5000, "integer of 5001 characters"),
    ("1e999", "overflows"),
    ("-1e400", "overflows"),
    ("1." + "0" * 5000, "number of 5002 characters"),
    ("NaN", "not JSON"),
    ("Infinity", "not JSON"),
])
def test_huge_numbers(folder, literal, match):
    text = _manifest_text(latent_dim=4).replace('"latent_dim": 4', f'"latent_dim": {literal}')
    assert literal in text
    _invalid(_write_raw_manifest(folder, text), match=match)


def test_duplicate_keys_are_refused(folder):
    text = _manifest_text().replace('"latent_dim": 4', '"latent_dim": 4, "latent_dim": 400')
    _invalid(_write_raw_manifest(folder, text), match="'latent_dim' twice")


def test_lone_surrogate_is_refused(folder):
    text = _manifest_text(description="x").replace('"x"', '"\\ud800"')
    _invalid(_write_raw_manifest(folder, text), match="lone surrogate")


def test_parse_manifest_accepts_plain_json():
    assert parse_manifest(b'\xef\xbb\xbf{"a": [1, 2.5, {"b": null}]}') == {"a": [1, 2.5, {"b": None}]}


# --- manifest: integers, the latent_dim cap, names, bounded messages ---------------------------------

@pytest.mark.parametrize("field,value", [
    ("height", 8.0), ("width", 8.0), ("channels", 1.0), ("latent_dim", 4.0), ("latent_dim", True),
    ("channels", True),
])
def test_integers_must_be_json_integers(folder, field, value):
    m = hostile.manifest()
    if field == "latent_dim":
        m[field] = value
    else:
        m["input"][field] = value
    err = _invalid(_write_raw_manifest(folder, json.dumps(m)), match="must be a JSON integer")
    assert field in err.message


def test_latent_dim_cap(good):
    big = hostile.good_onnx(os.path.join(os.path.dirname(good), "big"), latent=DEFAULT_MAX_LATENT_DIM + 1)
    err = _invalid(big, match=f"caps latent_dim at {DEFAULT_MAX_LATENT_DIM}")
    assert "set by the challenge" in err.message
    assert load(big, max_latent_dim=512).latent_dim == DEFAULT_MAX_LATENT_DIM + 1
    _invalid(good, match="caps latent_dim at 2", max_latent_dim=2)
    with pytest.raises(ValueError):
        load(good, max_latent_dim=0)
    assert MANIFEST_SCHEMA["properties"]["latent_dim"]["maximum"] == DEFAULT_MAX_LATENT_DIM


@pytest.mark.parametrize("name", ["champion\n", "champion ", "champion\r", " champion", "cham\x1bpion", "",
                                  "x" * 101, "champion\u202e"])
def test_names_that_are_refused(folder, name):
    assert manifest_problems(hostile.manifest(name=name))
    _invalid(_write_raw_manifest(folder, json.dumps(hostile.manifest(name=name))), match="'name'")


@pytest.mark.parametrize("name", ["champion", "Team X v1.2", "a", "a_b-c.d"])
def test_names_that_are_accepted(name):
    assert manifest_problems(hostile.manifest(name=name)) == []


def test_manifest_messages_are_bounded_and_printable(folder):
    m = hostile.manifest(description="\x1b]0;pwned\x07" * 10_000, license=["x"] * 5_000,
                         authors=[1] * 5_000)
    m.update({f"\x1b[2Junknown{i}" + "k" * 1000: i for i in range(500)})
    err = _invalid(_write_raw_manifest(folder, json.dumps(m)), match="unknown field(s)")
    assert "more" in err.message
    assert len(err.detail) < 5000 and "\x1b" not in err.detail
    problems = manifest_problems(m)
    assert len(problems) <= 11 and all(len(p) <= 300 and is_safe(p) for p in problems)


def test_model_path_in_messages_is_bounded(folder):
    m = hostile.manifest(model="\x1b]0;x\x07" + "m" * 1000)
    err = _invalid(_write_raw_manifest(folder, json.dumps(m)), match="is missing")
    assert "\x1b" not in err.message


# --- zip: names, conflicts, directory, compression ---------------------------------------------------

def _zip(dest, entries, *, good=None):
    """A zip of ``good``'s files plus ``entries``: (name, data) with data None for a folder entry."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(os.listdir(good)) if good else []:
            zf.write(os.path.join(good, f), f)
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), b"" if data is None else data)
    return str(dest)


@pytest.mark.parametrize("entries,match", [
    ([("a", b"file"), ("a/", None)], "is a folder, but the archive also holds a file"),
    ([("a/", None), ("a", b"file")], "is a file, but the archive also holds a folder"),
    ([("a", b"file"), ("a/b", b"inside a file")], "which the archive also holds as a file"),
    ([("d/a", b"1"), ("d/a", b"2")], "two members named"),
    ([("x" * 300, b"1")], "name component of 300 bytes"),
    ([("a/" * 1500 + "f", b"1")], "nested 1501 levels deep"),
    ([("/".join(["p" * 100] * 20), b"1")], "path of 2019 bytes"),
    ([("evil\x1b]0;pwned\x07.txt", b"1")], "control or bidi"),
], ids=["dir-over-file", "file-over-dir", "file-inside-file", "duplicate", "long-component", "deep",
        "long-path", "control-chars"])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_zip_name_attacks(good, tmp_path, entries, match):
    _invalid(_zip(tmp_path / "a.zip", entries, good=good), match=match)
    assert sorted(os.listdir(tmp_path)) == ["a.zip"]


def test_zip_name_that_is_not_utf8(good, tmp_path):
    path = _zip(tmp_path / "a.zip", [("\u00e9.bin", b"1")], good=good)  # non-ASCII: flagged UTF-8
    data = open(path, "rb").read()
    assert data.count("\u00e9.bin".encode()) == 2  # local header and central directory
    with open(path, "wb") as fh:
        fh.write(data.replace("\u00e9.bin".encode(), b"\xff\xfe.bin"))  # UnicodeDecodeError in zipfile
    _invalid(path, match="not a readable zip")


def test_zip_central_directory_is_bounded_before_parsing(good, tmp_path):
    path = _zip(tmp_path / "many.zip", [(f"f{i}", None) for i in range(2000)])
    _invalid(path, match="more than 100 members", archive_limits=ArchiveLimits(max_members=100))


@pytest.mark.parametrize("how,match", [("lzma", "compression method 14"), ("encrypted", "encrypted")])
def test_zip_exotic_members(good, tmp_path, how, match):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in os.listdir(good):
            zf.write(os.path.join(good, f), f)
        if how == "lzma":
            zf.writestr("x.bin", b"0" * 1000, compress_type=zipfile.ZIP_LZMA)
        else:
            zf.writestr("x.bin", b"ciphertext")
    if how == "encrypted":  # zipfile writes no encrypted members: set bit 0 of the flags by hand
        data = bytearray(path.read_bytes())
        cd = data.rindex(b"PK\x01\x02")  # the last central directory entry is x.bin's
        data[cd + 8] |= 0x1
        path.write_bytes(bytes(data))
    _invalid(str(path), match=match)


# --- tar: names, extension headers, sparse, compression ------------------------------------------------

def _tar(dest, names, *, good=None, fmt=tarfile.PAX_FORMAT, mode="w:gz"):
    with tarfile.open(dest, mode, format=fmt) as tf:
        for f in sorted(os.listdir(good)) if good else []:
            tf.add(os.path.join(good, f), arcname=f)
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return str(dest)


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("name,match", [
    ("x" * 300, "name component of 300 bytes"),
    ("a/" * 1500 + "f", "nested 1501 levels deep"),
    ("/".join(["p" * 100] * 20), "path of 2019 bytes"),
    ("evil\x1b[2J.txt", "control or bidi"),
], ids=["long-component", "deep", "long-path", "control-chars"])
def test_tar_name_attacks(good, tmp_path, fmt, name, match):
    _invalid(_tar(tmp_path / "a.tar.gz", [name], good=good, fmt=fmt), match=match)
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz"]


def test_tar_file_over_folder(good, tmp_path):
    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for f in os.listdir(good):
            tf.add(os.path.join(good, f), arcname=f)
        d = tarfile.TarInfo("a")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        f = tarfile.TarInfo("a")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"x"))
    _invalid(str(path), match="is a file, but the archive also holds a folder")


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names_within_limits_still_load(good, tmp_path, fmt):
    path = _tar(tmp_path / "ok.tar.gz", ["notes/" + "\u00e9" * 120 + ".txt"], good=good, fmt=fmt)
    with load(path) as sub:
        assert any(f.startswith("notes/") for f in sub.files)


def test_git_archive_style_global_header_loads(good, tmp_path):
    path = tmp_path / "git.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": "0" * 40}) as tf:
        for f in os.listdir(good):
            tf.add(os.path.join(good, f), arcname=f)
    with load(str(path)) as sub:
        assert sub.sha256 == load(good).sha256


_ZERO_MEMBER = gzip.compress(b"\0" * (1 << 20), 9)  # one gzip member: 1 MiB of zeros in ~1 KiB


def _huge_header_tgz(dest, typeflag, mib):
    """A .tar.gz whose first header is of ``typeflag`` and declares (and holds) ``mib`` MiB: gzip
    members concatenate, so the file is ~1 KiB per MiB and is written in milliseconds."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = typeflag, mib << 20
    with open(dest, "wb") as fh:
        fh.write(gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)))
        for _ in range(mib):
            fh.write(_ZERO_MEMBER)
    return str(dest)


@pytest.mark.parametrize("typeflag", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                                      tarfile.XGLTYPE])
def test_huge_extension_header_is_refused_before_it_is_read(tmp_path, typeflag):
    path = _huge_header_tgz(tmp_path / "huge.tar.gz", typeflag, 1024)  # declares and holds 1 GiB
    assert os.path.getsize(path) < 2 * 1024**2
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    err = _invalid(path, match="header of 1073741824 bytes")
    assert "64 KiB" in err.message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024


def test_chain_of_long_name_headers(tmp_path):
    path = tmp_path / "chain.tar.gz"
    with gzip.open(path, "wb") as fh:
        for _ in range(2000):  # tarfile recurses once per header: RecursionError near 330
            header = tarfile.TarInfo("././@LongLink")
            header.type, header.size = tarfile.GNUTYPE_LONGNAME, 512
            fh.write(header.tobuf(format=tarfile.GNU_FORMAT) + b"n" * 511 + b"\0")
        fh.write(b"\0" * 1024)
    _invalid(str(path), match=f"more than {MAX_TAR_HEADER_CHAIN} extended headers in a row")


def _pax_tar(dest, body: bytes, *, good=None):
    with tarfile.open(dest, "w:gz", format=tarfile.USTAR_FORMAT) as tf:
        for f in sorted(os.listdir(good)) if good else []:
            tf.add(os.path.join(good, f), arcname=f)
        header = tarfile.TarInfo("././@PaxHeader")
        header.type, header.size = tarfile.XHDTYPE, len(body)
        tf.addfile(header, io.BytesIO(body))
        f = tarfile.TarInfo("x.txt")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"x"))
    return str(dest)


@pytest.mark.parametrize("body", [
    b"2 " * 32_000 + b"a=\n",           # records whose '=' lies past their end: 2.6 s in tarfile
    b"1" * 60_000 + b" a=b\n",          # a digit run: tarfile's hdrcharset search is quadratic (4 s)
    b"30 comment=" + b"1 hdrcharset=x " * 4000 + b"\n",
    b"0 a=b\n",
], ids=["eq-past-end", "digit-run", "many-hdrcharset", "zero-length"])
def test_quadratic_pax_records_are_refused_fast(good, tmp_path, body):
    _invalid(_pax_tar(tmp_path / "pax.tar.gz", body, good=good), match="pax header")


def test_wellformed_pax_record_loads(good, tmp_path):
    path = _pax_tar(tmp_path / "pax.tar.gz", b"19 comment=hello 1\n", good=good)
    with load(path) as sub:
        assert "x.txt" in sub.files


@pytest.mark.parametrize("kind", ["gnu", "pax"])
def test_sparse_members_are_refused(good, tmp_path, kind):
    path = tmp_path / "sparse.tar.gz"
    if kind == "gnu":
        header = tarfile.TarInfo("sparse.bin")
        header.type, header.size = tarfile.GNUTYPE_SPARSE, 0
        with gzip.open(path, "wb") as fh:
            fh.write(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    else:
        body = b"22 GNU.sparse.major=1\n22 GNU.sparse.minor=0\n"
        _pax_tar(path, body, good=good)
    _invalid(str(path), match="sparse file")


@pytest.mark.parametrize("mode,suffix", [("w:xz", ".tar.gz"), ("w:bz2", ".tgz"), ("w:gz", ".tar")])
def test_only_the_compression_the_suffix_names(good, tmp_path, mode, suffix):
    path = tmp_path / f"s{suffix}"
    with tarfile.open(path, mode) as tf:
        for f in os.listdir(good):
            tf.add(os.path.join(good, f), arcname=f)
    _invalid(str(path), match="not a readable tar archive")


@pytest.mark.parametrize("pack", ["zip", "tgz"])
def test_mutated_archives_fail_cleanly(good, tmp_path, pack):
    """Seeded byte flips anywhere in a good archive: load succeeds or says invalid_submission."""
    src = (hostile.zip_folder(good, tmp_path / "s.zip") if pack == "zip"
           else hostile.tar_folder(good, tmp_path / "s.tar.gz"))
    data = bytearray(open(src, "rb").read())
    rng = random.Random(19)
    path = tmp_path / ("m.zip" if pack == "zip" else "m.tar.gz")
    t0 = time.monotonic()
    for _ in range(120):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        path.write_bytes(bytes(mutated))
        try:
            load(str(path)).close()
        except SubmissionFailure as exc:
            assert exc.kind == "invalid_submission" and len(exc.message) <= MAX_MESSAGE and is_safe(exc.message)
    assert time.monotonic() - t0 < 10


# --- folders: hard links, links to folders, unsafe names --------------------------------------------

def test_hard_link_inside_a_folder(folder, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:secret\n")
    os.chmod(secret, 0o600)
    os.link(secret, folder / "shadow")
    _invalid(str(folder), match="hard links")
    assert secret.read_text() == "root:secret\n" and stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_single_top_level_link_to_a_folder_outside(good, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(good, outside)
    top = tmp_path / "top"
    top.mkdir()
    os.symlink(outside, top / "sub")
    _invalid(str(top), match="no submission.json")


def test_fifo_and_unsafe_names_in_a_folder(folder):
    os.mkfifo(folder / "pipe")
    _invalid(str(folder), match="not a regular file")
    os.remove(folder / "pipe")
    os.close(os.open(os.path.join(os.fsencode(folder), b"\xff.bin"), os.O_CREAT | os.O_WRONLY, 0o644))
    _invalid(str(folder), match="not valid UTF-8")


def test_folder_with_a_control_character_name(folder):
    (folder / "x\x1b]0;pwned\x07").write_text("x")
    err = _invalid(str(folder), match="control or bidi")
    assert "\\x1b" in err.message


def test_deep_folder(folder):
    deep = os.path.join(folder, *["d"] * 40)
    os.makedirs(deep)
    _invalid(str(folder), match="nested 33 levels deep")


# --- the TOCTOU window between load and the sandbox's copy -----------------------------------------------

@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text("only root may read this\n")
    os.chmod(path, 0o600)
    return path


def _assert_untouched(secret):
    assert stat.S_IMODE(os.lstat(secret).st_mode) == 0o600
    assert secret.read_text() == "only root may read this\n"


def test_copy_tree_nofollow_copies_exactly_and_sets_modes(folder, tmp_path):
    sub = load(str(folder))
    os.makedirs(folder / "not-listed")  # present on disk but not in sub.files: not copied
    dest = tmp_path / "copy"
    assert copy_tree_nofollow(sub.root, sub.files, str(dest), expect_sha256=sub.sha256) == sub.sha256
    assert sorted(os.listdir(dest)) == sorted(sub.files)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o755
    for rel in sub.files:
        assert stat.S_IMODE(os.stat(dest / rel).st_mode) == 0o644
        assert (dest / rel).read_bytes() == (folder / rel).read_bytes()


def test_symlink_swapped_in_after_load(folder, tmp_path, secret):
    sub = load(str(folder))
    os.remove(folder / "encoder.onnx")
    os.symlink(secret, folder / "encoder.onnx")
    dest = tmp_path / "copy"
    with pytest.raises(SubmissionFailure) as info:
        copy_tree_nofollow(sub.root, sub.files, str(dest))
    assert info.value.kind == "invalid_submission" and "symbolic link" in info.value.message
    assert not dest.exists()
    _assert_untouched(secret)
    with pytest.raises(SubmissionFailure, match="symbolic link"):
        content_sha256(sub.root, sub.files)


def test_folder_on_the_path_swapped_for_a_link(good, tmp_path, secret):
    folder = tmp_path / "sub"
    os.makedirs(folder / "m")
    hostile.onnx_linear(str(folder / "m" / "encoder.onnx"))
    hostile.write_manifest(folder, hostile.manifest(model="m/encoder.onnx"))
    sub = load(str(folder))
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.symlink(secret, decoy / "encoder.onnx")
    shutil.rmtree(folder / "m")
    os.symlink(decoy, folder / "m")
    with pytest.raises(SubmissionFailure, match="symbolic link"):
        copy_tree_nofollow(sub.root, sub.files, str(tmp_path / "copy"))
    _assert_untouched(secret)


@pytest.mark.parametrize("swap,match", [("hardlink", "hard links"), ("fifo", "not a regular file"),
                                        ("vanish", "disappeared"), ("content", "content hash differs")])
def test_other_swaps_after_load(folder, tmp_path, secret, swap, match):
    sub = load(str(folder))
    target = folder / "encoder.onnx"
    os.remove(target)
    if swap == "hardlink":
        os.link(secret, target)
    elif swap == "fifo":
        os.mkfifo(target)  # opened non-blocking: no hang
    elif swap == "content":
        hostile.onnx_linear(str(target), latent=hostile.LATENT + 1)
    t0 = time.monotonic()
    with pytest.raises(SubmissionFailure) as info:
        copy_tree_nofollow(sub.root, sub.files, str(tmp_path / "copy"), expect_sha256=sub.sha256)
    assert time.monotonic() - t0 < 2.0
    assert info.value.kind == "invalid_submission" and match in info.value.message, info.value.message
    assert not (tmp_path / "copy").exists()
    _assert_untouched(secret)


def test_root_swapped_for_a_link(folder, tmp_path, good):
    sub = load(str(folder))
    os.rename(folder, tmp_path / "moved")
    os.symlink(good, folder)
    with pytest.raises(SubmissionFailure, match="symbolic link"):
        copy_tree_nofollow(sub.root, sub.files, str(tmp_path / "copy"))


def test_copy_refuses_paths_that_are_not_plain(folder, tmp_path):
    with pytest.raises(ValueError):
        copy_tree_nofollow(str(folder), ["../etc/passwd"], str(tmp_path / "copy"))
