"""The adversarial suite: hostile submissions fail with the right kind, touch nothing outside the
scratch folder, leave the parent unharmed, and the next submission evaluates normally.

TorchScript is code (it can read, write and allocate); ONNX and TorchScript cannot open sockets or
fork, so those attacks run as in-sandbox probes in tests/test_sandbox.py.
"""

import hashlib
import os
import signal
import threading
import time

import numpy as np
import pytest

from harness.errors import SubmissionFailure
from harness.sandbox import Limits, open_encoder
from harness.sandbox.backends import BwrapBackend
from harness.submission import load
import hostile

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* builders

FAST = Limits(wall_seconds=60, load_wall_seconds=120, memory_mb=4096, threads=1)
# short limits for the hostile call itself; loading torch keeps a generous allowance on a busy machine
LOOP_WALL = Limits(wall_seconds=3, load_wall_seconds=120, memory_mb=4096, threads=1)
LOOP_CPU = Limits(wall_seconds=60, load_wall_seconds=120, cpu_seconds=8, memory_mb=4096, threads=1)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("good") / "sub")


@pytest.fixture()
def outside(tmp_path):
    """A world-readable 'organizer' folder next to the sandbox: a dataset file and a victim file."""
    d = tmp_path / "organizer"
    d.mkdir()
    (d / "dsprites.npz").write_bytes(bytes(range(256)) * 64)
    (d / "victim.txt").write_text("original content")
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o777)  # even a world-writable folder stays closed to the child
    for f in d.iterdir():
        os.chmod(f, 0o666)
    return d


def _snapshot(*folders):
    out = {}
    for folder in folders:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run_hostile(folder, good, *, limits=FAST, n=3, outside=None, backend="process"):
    """Encode with a hostile submission; return the failure (or None); check the aftermath."""
    before = _snapshot(folder, *( [outside] if outside else []))
    failure = None
    t0 = time.monotonic()
    try:
        with open_encoder(load(folder), limits=limits, backend=backend) as enc:
            enc.encode(hostile.images(n))
    except SubmissionFailure as exc:
        failure = exc
    elapsed = time.monotonic() - t0
    # nothing outside the scratch folder changed: not the submission, not the organizer's files
    assert _snapshot(folder, *([outside] if outside else [])) == before
    # the parent is unharmed and the next submission evaluates normally
    x = hostile.images(5, seed=7)
    with open_encoder(load(good), limits=FAST) as enc:
        np.testing.assert_allclose(enc.encode(x), hostile.expected_codes(x), atol=1e-4)
    return failure, elapsed


def _kind(failure, kind, *words):
    assert failure is not None, f"expected {kind}, the submission ran fine"
    assert failure.kind == kind, (failure.kind, failure.message, failure.detail)
    for w in words:
        assert w.lower() in (failure.message + (failure.detail or "")).lower(), failure


# --- TorchScript: code inside the model ----------------------------------------------------------

@pytest.mark.parametrize("backend", ["process"] + (["bwrap"] if BwrapBackend().available()[0] else []))
def test_torchscript_reads_a_dataset_file(tmp_path, good, outside, backend):
    target = outside / "dsprites.npz"
    sub = hostile.torchscript(tmp_path / "s", "read_file", path=str(target), size=64)
    failure, _ = run_hostile(sub, good, outside=outside, backend=backend)
    # process: Landlock refuses the open; bwrap: the file does not even exist in the child's view
    _kind(failure, "runtime_error")
    said = (failure.detail or "").lower()  # the model's own text: in the detail, never in the message
    assert any(w in said for w in ("permission denied", "no such file")), failure.detail


# TorchScript's torch.save ignores write errors (it writes through an unchecked stream), so a
# denied write does not fail the model: what matters is that nothing is written. That the same
# scripted write succeeds outside the sandbox is checked by test_scripted_write_works_unsandboxed.

def test_torchscript_writes_a_file_outside(tmp_path, good, outside):
    target = outside / "dropped.pt"
    sub = hostile.torchscript(tmp_path / "s", "write_file", path=str(target))
    run_hostile(sub, good, outside=outside)
    assert not target.exists()


def test_torchscript_overwrites_a_file_outside(tmp_path, good, outside):
    target = outside / "victim.txt"
    sub = hostile.torchscript(tmp_path / "s", "write_file", path=str(target))
    run_hostile(sub, good, outside=outside)
    assert target.read_text() == "original content"


def test_torchscript_overwrites_its_own_submission(tmp_path, good):
    sub = tmp_path / "s"
    hostile.torchscript(sub, "write_file", path=str(sub / "encoder.pt"))
    run_hostile(str(sub), good)  # the snapshot in run_hostile covers the submission folder


def test_scripted_write_works_unsandboxed(tmp_path):
    target = tmp_path / "written.pt"
    sub = hostile.torchscript(tmp_path / "s", "write_file", path=str(target))
    with pytest.warns(UserWarning, match="UNSANDBOXED"):
        with open_encoder(load(sub), backend="none") as enc:
            enc.encode(hostile.images(1))
    assert target.exists()  # so the tests above would catch a sandbox that let it through


def test_torchscript_allocates_10_gb(tmp_path, good):
    sub = hostile.torchscript(tmp_path / "s", "alloc", numel=10 * 1024**3 // 4)
    failure, _ = run_hostile(sub, good)
    _kind(failure, "memory_exceeded")


def test_torchscript_loops_forever_wall_clock(tmp_path, good):
    sub = hostile.torchscript(tmp_path / "s", "loop")
    failure, elapsed = run_hostile(sub, good, limits=LOOP_WALL)
    _kind(failure, "timeout", "wall-clock", "encoding")
    assert elapsed < 30


@pytest.mark.slow
def test_torchscript_loops_forever_cpu_limit(tmp_path, good):
    sub = hostile.torchscript(tmp_path / "s", "loop")
    failure, _ = run_hostile(sub, good, limits=LOOP_CPU)
    _kind(failure, "timeout", "cpu-time", "encoding")


def test_torchscript_prints_a_flood(tmp_path, good):
    # 50 MB here to keep CI fast (bench/bench_sandbox.py --flood prints a gigabyte): printing is
    # not a failure; the log keeps only its tail and the parent's memory stays flat.
    sub = hostile.torchscript(tmp_path / "s", "print", lines=50_000)
    with open_encoder(load(sub), limits=FAST) as enc:
        codes = enc.encode(hostile.images(2))
        log = enc.log
    assert codes.shape == (2, hostile.LATENT)
    assert "earlier bytes of output dropped" in log and len(log) < 100_000


def test_torchscript_forward_raises(tmp_path, good):
    sub = hostile.torchscript(tmp_path / "s", "raise")
    failure, _ = run_hostile(sub, good)
    _kind(failure, "runtime_error", "deliberate failure")


def test_a_crash_is_reported_as_crashed(tmp_path, good):
    sub = hostile.torchscript(tmp_path / "s", "loop")
    with open_encoder(load(sub), limits=Limits(wall_seconds=60, memory_mb=4096, threads=1)) as enc:
        pid = enc._proc.pid
        threading.Timer(1.0, os.kill, (pid, signal.SIGSEGV)).start()  # as a segfault in the runtime would
        with pytest.raises(SubmissionFailure) as info:
            enc.encode(hostile.images(1))
    _kind(info.value, "crashed", "SIGSEGV")


def test_good_torchscript_and_torch_export(tmp_path):
    x = hostile.images(300)
    expected = x.astype(np.float32).transpose(0, 3, 1, 2).reshape(300, -1)[:, :hostile.LATENT] / 255.0 * 2.0
    import torch

    for sub, device in ((hostile.torchscript(tmp_path / "ts", "good"), "cuda"),
                        (hostile.torch_export(tmp_path / "ep"), "cpu")):
        with open_encoder(load(sub), limits=FAST, device=device) as enc:
            np.testing.assert_allclose(enc.encode(x), expected, rtol=1e-6, atol=1e-6)
            assert enc.info["runtime"] == "torch"
            if device == "cuda" and not torch.cuda.is_available():
                assert enc.info["device"] == "cpu" and any("ran on the CPU" in n for n in enc.notes)


@pytest.mark.parametrize("backend", ["process", "none"])
def test_pt2_with_pickled_weights_never_runs_the_payload(tmp_path, good, backend):
    # backend none runs in *this* process: the payload stays inert because harness forces
    # torch.load(weights_only=True) and refuses pickle.loads while loading a .pt2, not only
    # because of the sandbox.
    marker = tmp_path / "payload-ran"
    sub = hostile.hostile_pt2(tmp_path / "s", str(marker))
    if backend == "none":
        with pytest.warns(UserWarning, match="UNSANDBOXED"), pytest.raises(SubmissionFailure) as info:
            with open_encoder(load(sub), backend="none"):
                pass
        failure = info.value
    else:
        failure, _ = run_hostile(sub, good)
    _kind(failure, "load_error")
    assert not marker.exists()


# --- ONNX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("tail,words", [("nan", ["NaN"]), ("shape", ["shape"]), ("double", ["float64"]),
                                        ("wide", ["shape"])])
def test_onnx_bad_outputs(tmp_path, good, tail, words):
    failure, _ = run_hostile(hostile.good_onnx(tmp_path / "s", tail=tail), good)
    _kind(failure, "bad_output", *words)


def test_onnx_loop_forever(tmp_path, good):
    failure, elapsed = run_hostile(hostile.onnx_forever(tmp_path / "s"), good, limits=LOOP_WALL)
    _kind(failure, "timeout", "wall-clock", "encoding")
    assert elapsed < 20


def test_onnx_unknown_op_domain(tmp_path, good):
    failure, _ = run_hostile(hostile.good_onnx(tmp_path / "s", domain="com.evil"), good)
    _kind(failure, "load_error", "com.evil")


def test_onnx_external_data_escaping_the_folder(tmp_path, good, outside):
    sub = hostile.good_onnx(tmp_path / "s", external_location="../organizer/dsprites.npz")
    failure, _ = run_hostile(sub, good, outside=outside)
    _kind(failure, "load_error", "outside the submission")


def test_onnx_external_data_inside_the_folder_is_fine(tmp_path):
    sub = hostile.good_onnx(tmp_path / "s", external_location="weights.bin")
    assert os.path.isfile(os.path.join(sub, "weights.bin"))
    x = hostile.images(3)
    with open_encoder(load(sub), limits=FAST) as enc:
        np.testing.assert_allclose(enc.encode(x), hostile.expected_codes(x), atol=1e-4)


def test_onnx_file_that_is_not_a_model(tmp_path, good):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "encoder.onnx").write_bytes(os.urandom(4096))
    hostile.write_manifest(folder, hostile.manifest())
    failure, _ = run_hostile(str(folder), good)
    _kind(failure, "load_error")


def test_onnx_fixed_batch_axis(tmp_path, good):
    # a fixed batch is fed in chunks of its size (tests/test_input_conventions.py); one too large is refused
    failure, _ = run_hostile(hostile.good_onnx(tmp_path / "s", batch=4097), good)
    _kind(failure, "invalid_submission", "dynamic batch")


def test_manifest_declaring_the_wrong_channels(tmp_path, good):
    sub = hostile.good_onnx(tmp_path / "s")
    m = hostile.manifest(input={"channels": 3, "height": hostile.SIDE, "width": hostile.SIDE})
    hostile.write_manifest(sub, m)
    failure, _ = run_hostile(sub, good)
    _kind(failure, "invalid_submission", "channels=1")
