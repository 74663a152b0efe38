"""harness.submission: manifest schema, safe unpacking, format checks, content hash."""

import json
import os
import sys

import pytest

from harness.errors import SubmissionFailure
from harness.submission import MANIFEST_SCHEMA, load, manifest_problems
from harness.submission.archive import ArchiveLimits

sys.path.insert(0, os.path.dirname(__file__))
import hostile  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("good") / "sub")


def _invalid(path, *, match, **kw):
    with pytest.raises(SubmissionFailure) as info:
        load(path, **kw)
    assert info.value.kind == "invalid_submission"
    assert match in info.value.message, info.value.message
    return info.value


def test_published_schema_matches_the_code():
    docs = os.path.join(os.path.dirname(__file__), "..", "docs", "submission.schema.json")
    with open(docs) as fh:
        assert json.load(fh) == MANIFEST_SCHEMA


def test_load_folder(good):
    sub = load(good)
    assert sub.name == "test-model" and sub.format == "onnx" and sub.latent_dim == hostile.LATENT
    assert sub.outputs == ["mean"] and not sub.has_logvar
    assert sub.input_shape == (1, hostile.SIDE, hostile.SIDE)
    assert os.path.isfile(sub.model_path)
    assert len(sub.sha256) == 64 and sub.summary()["sha256"] == sub.sha256


@pytest.mark.parametrize("pack", ["zip", "tgz", "tgz_nested"])
def test_archives_unpack_to_the_same_content_hash(good, tmp_path, pack):
    if pack == "zip":
        path = hostile.zip_folder(good, tmp_path / "s.zip")
    elif pack == "tgz":
        path = hostile.tar_folder(good, tmp_path / "s.tar.gz")
    else:  # an archive of the folder itself (one top-level directory)
        path = hostile.tar_folder(good, tmp_path / "s.tgz", arcname="my-submission")
    with load(path) as sub:
        root = sub.root
        assert sub.sha256 == load(good).sha256
        assert os.path.isfile(sub.model_path)
    assert not os.path.exists(root)  # the private unpack folder is removed on close


def test_content_hash_changes_with_content(good, tmp_path):
    other = hostile.good_onnx(tmp_path / "o", latent=hostile.LATENT + 1)
    assert load(other).sha256 != load(good).sha256


# --- archives -------------------------------------------------------------------------------------

@pytest.mark.parametrize("member,match", [
    ("../evil.txt", "outside the archive"),
    ("a/../../evil.txt", "outside the archive"),
    ("/etc/evil.txt", "absolute path"),
    ("..\\evil.txt", "outside the archive"),
    ("C:\\evil.txt", "absolute path"),
])
def test_zip_path_attacks(good, tmp_path, member, match):
    path = hostile.zip_with_member(tmp_path / "a.zip", member, good_folder=good)
    _invalid(path, match=match)
    assert not os.path.exists(tmp_path / "evil.txt")


def test_zip_symlink(good, tmp_path):
    path = hostile.zip_with_member(tmp_path / "a.zip", "link", symlink_to="/etc/passwd", good_folder=good)
    _invalid(path, match="symbolic link")


@pytest.mark.parametrize("kind,member,match", [
    ("symlink", "link", "is a link"),
    ("hardlink", "hard", "is a link"),
    ("device", "null", "device"),
    ("file", "../escape.txt", "outside the archive"),
    ("file", "/tmp/abs.txt", "absolute path"),
])
def test_tar_attacks(good, tmp_path, kind, member, match):
    path = hostile.tar_with_member(tmp_path / "a.tar.gz", member, kind=kind, good_folder=good)
    _invalid(path, match=match)
    assert not os.path.exists(tmp_path / "escape.txt")


def test_decompression_bomb_stops_at_the_limit(good, tmp_path):
    path = hostile.zip_bomb(tmp_path / "bomb.zip", megabytes=32, good_folder=good)
    assert os.path.getsize(path) < 1024 * 1024  # ~1000x compression
    _invalid(path, match="decompression bomb", archive_limits=ArchiveLimits(max_total_bytes=8 * 1024**2))


def test_too_many_members(good, tmp_path):
    path = hostile.zip_folder(good, tmp_path / "s.zip")
    _invalid(path, match="more than 1 members", archive_limits=ArchiveLimits(max_members=1))


def test_corrupt_archive(tmp_path):
    path = tmp_path / "junk.zip"
    path.write_bytes(b"PK\x03\x04 this is not a zip")
    _invalid(str(path), match="not a readable zip")


def test_symlink_inside_a_folder(good, tmp_path):
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    os.symlink("/etc/passwd", folder / "passwd")
    _invalid(str(folder), match="symbolic link")


# --- manifest -------------------------------------------------------------------------------------

def test_manifest_missing(tmp_path):
    hostile.onnx_linear(str(tmp_path / "encoder.onnx"))
    _invalid(str(tmp_path), match="no submission.json")


def test_manifest_not_json(tmp_path):
    hostile.write_manifest(tmp_path, "{'name': 'single quotes'")
    _invalid(str(tmp_path), match="not valid JSON")


@pytest.mark.parametrize("override,match", [
    ({"format": "pickle"}, "'format' is \"pickle\""),
    ({"latent_dim": 0}, "'latent_dim'"),
    ({"latent_dim": -3}, "'latent_dim'"),
    ({"latent_dim": "10"}, "'latent_dim'"),
    ({"input": {"channels": 2, "height": 8, "width": 8}}, "'input.channels'"),
    ({"outputs": ["logvar"]}, "'outputs'"),
    ({"latent_dims": 4}, "unknown field(s) 'latent_dims'"),
    ({"model": "missing.onnx"}, "is missing"),
    ({"model": "../encoder.onnx"}, "relative path inside"),
    ({"model": "/etc/passwd"}, "relative path inside"),
])
def test_bad_manifest_fields(good, tmp_path, override, match):
    import shutil

    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    with open(folder / "submission.json") as fh:
        m = json.load(fh)
    m.update(override)
    hostile.write_manifest(folder, m)
    _invalid(str(folder), match=match)


def test_missing_required_fields_are_all_named():
    problems = manifest_problems({"name": "x"})
    assert any("'format'" in p and "'latent_dim'" in p and "'model'" in p for p in problems)


# --- model files that are not models / are pickles --------------------------------------------------

@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_not_a_model(tmp_path, fmt):
    (tmp_path / "encoder.pt").write_bytes(b"hello, I am a text file\n" * 10)
    hostile.write_manifest(tmp_path, hostile.manifest(format=fmt, model="encoder.pt"))
    _invalid(str(tmp_path), match="not a")


def test_empty_model(tmp_path):
    (tmp_path / "encoder.onnx").write_bytes(b"")
    hostile.write_manifest(tmp_path, hostile.manifest())
    _invalid(str(tmp_path), match="empty")


@pytest.mark.parametrize("builder,fmt", [
    (hostile.pickled_module, "torchscript"), (hostile.pickled_module, "torch_export"),
    (hostile.raw_pickle, "torchscript"), (hostile.raw_pickle, "onnx"),
])
def test_pickles_are_refused_unread(tmp_path, builder, fmt):
    marker = tmp_path / "payload-ran"
    builder(tmp_path / "s", str(marker), fmt=fmt)
    err = _invalid(str(tmp_path / "s"), match="pickle")
    assert "never unpickle" in err.message
    assert not marker.exists()
