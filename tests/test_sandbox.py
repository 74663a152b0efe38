"""harness.sandbox: encoding through the sandbox, layers, containment probes, validate and CLI."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from harness.cli import cli
from harness.errors import InputError, SubmissionFailure
from harness.sandbox import Limits, open_encoder
from harness.sandbox.backends import BwrapBackend
from harness.sandbox import validate
from harness.submission import load
import hostile

ROOT = os.geteuid() == 0
HAVE_BWRAP = BwrapBackend().available()[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("good") / "sub")


@pytest.fixture(scope="module")
def good_logvar_rgb(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("rgb") / "sub", channels=3, logvar=True)


def test_encode_matches_the_model_and_streams_in_chunks(good):
    x = hostile.images(257, seed=1)
    with open_encoder(load(good), limits=Limits(batch_size=100)) as enc:
        codes = enc.encode(x)
        again = enc.encode(x[:3])
        empty = enc.encode(x[:0])
        assert enc.images_encoded == 260
    assert codes.dtype == np.float32 and codes.shape == (257, hostile.LATENT)
    np.testing.assert_allclose(codes, hostile.expected_codes(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(again, codes[:3])
    assert empty.shape == (0, hostile.LATENT)


def test_layers_are_recorded_and_match_the_report(good):
    with open_encoder(good) as enc:  # a path works too
        layers, report, info = enc.layers, enc.report, enc.info
    assert info["runtime"] == "onnxruntime" and info["device"] == "cpu"
    assert "clean_env" in layers and "threads:2" in layers
    for line in report:  # every layer claimed as applied says ok in the report, and vice versa
        name, state = line.split(": ")[:2]
        if name in ("mount", "landlock"):
            continue
        assert (state == "ok") == (name in layers), line
    if ROOT:
        assert "namespaces:net,ipc,mount" in layers and any(layer.startswith("uid:") for layer in layers)
    assert "landlock:fs" in layers or any("landlock: NOT applied" in line for line in report)


def test_logvar_and_channel_tiling(good_logvar_rgb):
    x = hostile.images(5, channels=1)
    with open_encoder(load(good_logvar_rgb)) as enc:
        mean, logvar = enc.encode_with_logvar(x)
        notes = list(enc.notes)
    expected = hostile.expected_codes(x, channels=3)
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(logvar, -expected, rtol=1e-5, atol=1e-4)
    assert any("tiled to 3 channels" in n for n in notes)


def test_shape_mismatch_and_bad_arguments(good):
    with open_encoder(load(good)) as enc:
        with pytest.raises(SubmissionFailure) as info:
            enc.encode(hostile.images(2, side=hostile.SIDE * 2))
        assert info.value.kind == "invalid_submission" and "declares" not in info.value.message
        with pytest.raises(InputError):
            enc.encode(np.zeros((2, hostile.SIDE, hostile.SIDE), np.uint8))
        with pytest.raises(InputError):
            enc.encode_with_logvar(hostile.images(2))
        np.testing.assert_allclose(enc.encode(hostile.images(2)), hostile.expected_codes(hostile.images(2)),
                                   atol=1e-4)
    with pytest.raises(InputError):
        with open_encoder(good, backend="chroot"):
            pass
    with pytest.raises(InputError):
        Limits(wall_seconds=-1)


def test_docker_backend_without_its_image_is_an_infra_error(good, monkeypatch):
    # Whether or not an engine runs here, a missing grader image is our side's failure.
    monkeypatch.setenv("HARNESS_DOCKER_IMAGE", "harness-no-such-image:0")
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(good, backend="docker"):
            pass
    assert info.value.kind == "infra_error"


def test_backend_none_is_loudly_unsandboxed(good):
    x = hostile.images(4)
    with pytest.warns(UserWarning, match="UNSANDBOXED"):
        with open_encoder(load(good), backend="none") as enc:
            codes = enc.encode(x)
            assert enc.layers == [] and any("UNSANDBOXED" in n for n in enc.notes)
    np.testing.assert_allclose(codes, hostile.expected_codes(x), atol=1e-4)


def test_the_cli_says_unsandboxed_once_in_one_line(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "harness", "evaluate", str(repo / "submissions" / "example"),
                          "--dataset", "dummy", "--sandbox", "none", "--metric", "mig", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in res.stderr.splitlines() if "UNSANDBOXED" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING: UNSANDBOXED"), res.stderr


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not usable here")
def test_bwrap_backend_encodes_the_same(good):
    x = hostile.images(16)
    with open_encoder(load(good), backend="bwrap") as enc:
        codes = enc.encode(x)
        assert any(layer.startswith("bwrap:") for layer in enc.layers)
    np.testing.assert_allclose(codes, hostile.expected_codes(x), atol=1e-4)


# --- containment probes: hostile code inside the real sandbox ------------------------------------

@pytest.mark.parametrize("backend", ["process"] + (["bwrap"] if HAVE_BWRAP else []))
def test_probe_dataset_files_network_forks_and_signals_are_contained(tmp_path, backend):
    from harness.sandbox.doctor import probe

    dataset = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    dataset.write_bytes(b"held-out images")
    os.chmod(tmp_path, 0o755)
    os.chmod(dataset, 0o644)  # world-readable: the uid drop alone would not keep it private
    cache = os.environ.get("HARNESS_CACHE") or os.path.expanduser("~/.cache/harness")
    extra = [str(dataset)] + ([os.path.join(cache, f) for f in os.listdir(cache)][:3] if os.path.isdir(cache) else [])
    result = probe(backend, limits=Limits(max_processes=64), secret_files=extra,
                   forbidden_writes=[str(tmp_path / "dropped.txt")])
    assert result["available"], result
    checks = result["checks"]
    assert all(c["contained"] for c in checks.values()), checks
    assert f"read:{dataset}" in checks and "tcp_connect" in checks and "signal_parent" in checks
    if ROOT:
        assert "fork_bomb" in checks
    assert not (tmp_path / "dropped.txt").exists()
    assert result["facts"]["scratch_writable"]
    # the launcher runs from its private copy, never the repository or site-packages
    assert "/harness-sbx-" in result["facts"]["harness_from"] and "/lib/harness/" in result["facts"]["harness_from"]
    assert set(result["facts"]["env"]) <= {"HOME", "LANG", "PATH", "PWD", "TMPDIR", "TORCHINDUCTOR_CACHE_DIR",
                                           "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"}


# --- validate ------------------------------------------------------------------------------------

def test_validate_good_submission(good):
    report = validate(good)
    assert report["ok"] and report["verdict"].startswith("VALID")
    assert [c["name"] for c in report["checks"]] == ["manifest and files", "load", "probe batch 1",
                                                      "probe batch 257"]
    assert report["submission"]["sha256"] == load(good).sha256
    json.dumps(report)


def test_validate_reports_the_failure_kind(tmp_path):
    bad = hostile.good_onnx(tmp_path / "nan", tail="nan")
    report = validate(bad)
    assert not report["ok"] and report["failure"]["kind"] == "bad_output"
    assert report["verdict"].startswith("INVALID (bad_output) at probe batch of 1")
    assert "NaN" in report["failure"]["message"]


def test_validate_notes_a_constant_code(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = tmp_path / "const"
    folder.mkdir()
    zero = numpy_helper.from_array(np.zeros((1, 1, hostile.SIDE, hostile.SIDE), np.float32), "zero")
    nodes = [helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Flatten", ["z"], ["f"]),
             helper.make_node("Slice", ["f", "st", "en", "ax"], ["mean"])]
    inits = [zero] + [numpy_helper.from_array(np.array([v], np.int64), n)
                      for n, v in (("st", 0), ("en", hostile.LATENT), ("ax", 1))]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           ["N", 1, hostile.SIDE, hostile.SIDE])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "encoder.onnx"))
    hostile.write_manifest(folder, hostile.manifest())
    report = validate(str(folder))
    assert report["ok"] and any("constant" in n for n in report["notes"])


# --- CLI ------------------------------------------------------------------------------------------

def test_cli_validate_exit_codes(good, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", good])
    assert ok.exit_code == 0 and "VALID" in ok.output
    bad = hostile.write_manifest(tmp_path / "bad", {"name": "x"})
    res = runner.invoke(cli, ["validate", bad, "--json"])
    assert res.exit_code == 1
    report = json.loads(res.output)
    assert report["failure"]["kind"] == "invalid_submission"
    missing = runner.invoke(cli, ["validate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    # our side failing (no such docker image, or no engine at all) is exit 3, as for evaluate
    ours = runner.invoke(cli, ["validate", good, "--sandbox", "docker", "--json"],
                         env={"HARNESS_DOCKER_IMAGE": "harness-no-such-image:0"})
    assert ours.exit_code == 3 and json.loads(ours.output)["failure"]["kind"] == "infra_error", ours.output


@pytest.mark.slow
def test_cli_doctor_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "harness", "doctor", "--json", "--backend", "process"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["machine"]["landlock_abi"] >= 0
    proc = report["backends"]["process"]
    assert proc["available"] and all(c["contained"] for c in proc["checks"].values())


@pytest.mark.skipif(not ROOT, reason="namespaces and uid switching need root")
def test_each_layer_holds_on_its_own():
    from harness.sandbox.doctor import probe

    # Landlock alone keeps a world-readable file and outside writes closed (no uid switch)
    no_uid = probe("process", without=("uid",), tcp=False, forks=False)
    assert not any(layer.startswith("uid:") for layer in no_uid["layers"])
    assert all(c["contained"] for k, c in no_uid["checks"].items() if k.startswith(("read:", "write:")))
    # without Landlock, the same world-readable file is readable: Landlock is what closes it
    no_landlock = probe("process", without=("landlock",), tcp=True, forks=False)
    reads = [c for k, c in no_landlock["checks"].items() if k.startswith("read:")]
    assert reads and not reads[0]["contained"]
    # ... while the network stays closed by the namespace and seccomp
    assert no_landlock["checks"]["tcp_connect"]["contained"]
    # without seccomp, TCP is still refused (empty network namespace, Landlock net)
    no_seccomp = probe("process", without=("seccomp",), forks=False)
    assert "seccomp" not in no_seccomp["layers"]
    assert no_seccomp["checks"]["tcp_connect"]["contained"]
    assert "EAFNOSUPPORT" not in no_seccomp["checks"]["tcp_connect"]["detail"]


def test_cuda_request_falls_back_to_cpu_with_a_note(good):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present: no fallback to observe")
    x = hostile.images(3)
    with open_encoder(load(good), device="cuda") as enc:
        codes = enc.encode(x)
        assert enc.info["device"] == "cpu"
        assert any("cuda requested" in n and "CPU" in n for n in enc.notes), enc.notes
    np.testing.assert_allclose(codes, hostile.expected_codes(x), atol=1e-4)


def test_the_child_dies_with_its_parent(good, tmp_path):
    import signal
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, time\n"
        "from harness.sandbox import open_encoder\n"
        f"with open_encoder({good!r}) as enc:\n"
        "    print(enc._proc.pid, flush=True)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # alive
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(100):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            if open(f"/proc/{child}/stat").read().split(") ")[1].startswith("Z"):
                break  # a zombie waiting for init to reap it: dead
            time.sleep(0.05)
        else:
            pytest.fail("the sandboxed child outlived its parent")
    finally:
        parent.kill()
        parent.wait()
        from harness.submission.core import sweep_stale

        sweep_stale("harness-sbx-")  # the killed parent could not remove its sandbox folder
        assert not any(n.startswith(f"harness-sbx-{parent.pid}-") for n in os.listdir(tempfile.gettempdir()))


def test_a_sandbox_that_cannot_start_is_an_infra_error(good, monkeypatch):
    from harness.sandbox import backends

    # a launcher that dies before the layers are up: our failure, never the participant's
    monkeypatch.setattr(backends, "python_command", lambda lib: [sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(good)):
            pass
    assert info.value.kind == "infra_error"


def test_required_layers(good):
    with open_encoder(load(good), require_layers=("clean_env", "threads")) as enc:
        assert enc.encode(hostile.images(1)).shape == (1, hostile.LATENT)
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(good), require_layers=("landlock", "no-such-layer")):
            pass
    assert info.value.kind == "infra_error"
    from harness.sandbox.layers import landlock_abi

    if landlock_abi() > 0:  # only the layer this machine cannot give is named
        assert "layer(s) no-such-layer could not" in info.value.message
