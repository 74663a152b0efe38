"""Issue 19: containment in depth. Each class of attack is built for real and shown contained.

The sandbox runs real children (onnxruntime, torch, the launcher's layers, cgroups where the
machine has them). Forged result frames come from a real child process that speaks the wire
protocol itself: the session code that reads them is the one graders run.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from harness.errors import SubmissionFailure
from harness.sandbox import Limits, cgroups, open_encoder
from harness.sandbox.backends import ProcessBackend, release_uid
from harness.sandbox.exits import ExitFacts, classify_exit
from harness.submission import load
import hostile

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* builders
ROOT = os.geteuid() == 0
FAST = Limits(wall_seconds=60, load_wall_seconds=120, memory_mb=4096, threads=1)


def _have_cgroup() -> bool:
    cg, _ = cgroups.create(memory_mb=64, max_processes=8)
    if cg is None:
        return False
    cg.remove()
    return True


HAVE_CGROUP = ROOT and _have_cgroup()


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return hostile.good_onnx(tmp_path_factory.mktemp("good") / "sub")


def _still_fine(good):
    x = hostile.images(5, seed=7)
    with open_encoder(load(good), limits=FAST) as enc:
        np.testing.assert_allclose(enc.encode(x), hostile.expected_codes(x), atol=1e-4)


# --- 2 and 4: sockets, processes, memory of the whole tree, shared folders ----------------------

@pytest.mark.skipif(not ROOT, reason="namespaces and the uid switch need root")
def test_sockets_new_processes_and_shared_folders_are_closed():
    from harness.sandbox.doctor import probe

    result = probe("process", limits=Limits(max_processes=64))
    checks = result["checks"]
    for name in ("unix_connect", "socketpair", "spawn", "fork_bomb", "tcp_connect", "empty:/run", "empty:/dev/shm"):
        assert checks[name]["contained"], (name, checks[name])
    assert "EPERM" in checks["unix_connect"]["detail"] and "EPERM" in checks["spawn"]["detail"]
    for layer in ("seccomp:no_socket", "seccomp:no_fork", "private_tmp"):
        assert layer in result["layers"], result["report"]
    # the probe can fail: without seccomp the same unix socket (next to the model's folder,
    # where Landlock does not look at connect) answers, and a new process starts
    open_ = probe("process", without=("seccomp",), tcp=False, scratch=False)["checks"]
    assert not open_["unix_connect"]["contained"] and not open_["spawn"]["contained"]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_CGROUP, reason="needs root and a writable cgroup v1/v2 memory+pids hierarchy")
def test_forked_children_are_bounded_together_by_the_cgroup():
    from harness.sandbox.doctor import probe

    # 3 children x 900 MB, each far below RLIMIT_AS (2048 MB), together over the 2048 MB cgroup
    limits = Limits(memory_mb=2048, max_processes=64)
    kw = dict(limits=limits, without=("seccomp",), forked_memory_mb=900, tcp=False, sockets=False, forks=False,
              scratch=False)
    bounded = probe("process", **kw)
    assert {"cgroup:memory", "cgroup:pids"} <= set(bounded["layers"]), [r for r in bounded["report"] if "cgroup" in r]
    assert bounded["checks"]["forked_memory"]["contained"], bounded["checks"]["forked_memory"]
    # ...and without the cgroup the same children hold it all: the cgroup is what stopped them
    unbounded = probe("process", **{**kw, "without": ("seccomp", "cgroup")})
    assert not unbounded["checks"]["forked_memory"]["contained"]
    assert not any(layer.startswith("cgroup:") for layer in unbounded["layers"])


@pytest.mark.skipif(not HAVE_CGROUP, reason="needs a writable cgroup hierarchy")
def test_session_cgroups_are_removed_and_stale_ones_swept():
    cg, why = cgroups.create(memory_mb=128, max_processes=16)
    assert cg is not None, why
    dirs = list(cg.dirs.values())
    proc = subprocess.Popen(cgroups.join_command(cg, [sys.executable, "-c", "import time; time.sleep(30)"]))
    deadline = time.time() + 10
    while not cg.contains(proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert cg.contains(proc.pid)
    cg.remove()  # kills what is inside, then removes the folders
    assert proc.wait(timeout=10) == -9
    assert not any(os.path.exists(d) for d in dirs)


# --- 5: disk ------------------------------------------------------------------------------------

@pytest.mark.skipif(not ROOT, reason="the scratch tmpfs needs the mount namespace (root)")
def test_a_model_cannot_fill_the_disk(tmp_path, good):
    # five 16 MB files: each under the per-file limit, together over the 64 MB scratch
    folder = hostile.torchscript(tmp_path / "s", "fill_scratch", files=5, numel=4 * 1024 * 1024)
    with open_encoder(load(folder), limits=FAST) as enc:
        assert "scratch_quota:64m" in enc.layers, enc.report
        try:
            enc.encode(hostile.images(2))  # torch.save drops ENOSPC silently: the model may still run
        except SubmissionFailure as exc:
            assert exc.kind == "runtime_error", exc
        # what the child wrote, seen through its own mount namespace; the disk under it got nothing
        inside = f"/proc/{enc._proc.pid}/root{enc._sd.scratch}"
        written = sum(os.path.getsize(os.path.join(inside, f)) for f in os.listdir(inside))
        assert 48 << 20 < written <= 64 << 20, written
        assert os.listdir(enc._sd.scratch) == []
    _still_fine(good)


# --- 3 and 6: forged and oversized result frames ------------------------------------------------

FORGER = textwrap.dedent('''
    import json, os, struct, sys
    FRAME = struct.Struct("!IQ")
    scenario = sys.argv[1]

    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(0, n - len(buf))
            if not chunk:
                sys.exit(0)
            buf += chunk
        return buf

    def recv():
        h, p = FRAME.unpack(read(FRAME.size))
        header = json.loads(read(h))
        return header, read(p) if p else b""

    def send(header, payload=b"", raw=None):
        head = raw if raw is not None else json.dumps(header).encode()
        os.write(1, FRAME.pack(len(head), len(payload)) + head + payload)

    recv()  # the configuration
    send({"ok": True, "stage": "sandboxed", "layers": ["forger"], "report": []})
    if scenario == "infra_on_load":
        send({"ok": False, "kind": "infra_error", "message": "not my fault, retry me"})
        sys.exit(0)
    send({"ok": True, "stage": "loaded", "info": {"runtime": "forger", "notes": ["x" * 5000] * 100}})
    header, payload = recv()
    n = header["shape"][0]
    if scenario == "missing_outputs":
        send({"ok": True})
    elif scenario == "bad_meta":
        send({"ok": True, "outputs": [{"shape": "everything", "dtype": "float32", "bytes": 4}]}, b"abcd")
    elif scenario == "deep_json":
        send(None, raw=b"[" * 100000 + b"]" * 100000)
    elif scenario == "not_a_dict":
        send(None, raw=b"[1, 2, 3]")
    elif scenario == "unknown_kind":
        send({"ok": False, "kind": "pwned", "message": "x"})
    elif scenario == "infra_on_encode":
        send({"ok": False, "kind": "infra_error", "message": "grader broke"})
    elif scenario == "huge_payload":
        os.write(1, FRAME.pack(2, 10 * 1024 ** 3) + b"{}")
    elif scenario == "float64_payload":
        blob = bytes(n * 4 * 8)
        send({"ok": True, "outputs": [{"shape": [n, 4], "dtype": "<f8", "bytes": len(blob)}]}, blob)
    elif scenario == "object_dtype":
        send({"ok": True, "outputs": [{"shape": [n, 4], "dtype": "O", "bytes": n * 16}]}, bytes(n * 16))
    elif scenario == "overflowing_shape":  # 2**62 * 2**2 wraps to 0 in int64; 4 * that to a small size
        send({"ok": True, "outputs": [{"shape": [2**31 - 1, 2**31 - 1, 4], "dtype": "<f4", "bytes": 16}]},
             bytes(16))
    elif scenario == "honest":
        send({"ok": True, "outputs": [{"shape": [n, 4], "dtype": "<f4", "bytes": n * 16}]}, bytes(n * 16))
    import time
    time.sleep(30)
''')


class ForgerBackend(ProcessBackend):
    """A child that has taken over the result channel: it writes the frames a hostile model would."""

    scenario = "honest"

    def layers(self, limits, device):
        return {"namespaces": False, "landlock": False, "seccomp": False, "rlimits": False, "uid": None}

    def spawn(self, sd, cfg, cgroup=None):
        return subprocess.Popen([sys.executable, "-c", FORGER, self.scenario], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                close_fds=True, bufsize=0)


def _forged(monkeypatch, good, scenario):
    from harness.sandbox import backends

    forger = type("Forger", (ForgerBackend,), {"scenario": scenario, "uses_cgroup": False})
    monkeypatch.setitem(backends.BACKENDS, "process", forger)
    try:
        with open_encoder(load(good), limits=Limits(wall_seconds=20)) as enc:
            codes = enc.encode(hostile.images(3))
            return None, codes, enc
    except SubmissionFailure as exc:
        return exc, None, None
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("scenario,kind,words", [
    ("infra_on_load", "runtime_error", ["infrastructure", "counts as the submission's"]),
    ("infra_on_encode", "runtime_error", ["infrastructure"]),
    ("missing_outputs", "bad_output", ["malformed"]),
    ("bad_meta", "bad_output", ["malformed"]),
    ("deep_json", "bad_output", ["result channel"]),
    ("not_a_dict", "bad_output", ["result channel"]),
    ("unknown_kind", "bad_output", ["unknown failure kind"]),
    ("huge_payload", "bad_output", ["exceeds"]),
    ("float64_payload", "bad_output", ["exceeds"]),
    ("object_dtype", "bad_output", ["malformed"]),
    ("overflowing_shape", "bad_output", ["malformed"]),
])
def test_forged_frames_are_the_submissions_failure(monkeypatch, good, scenario, kind, words):
    failure, _, _ = _forged(monkeypatch, good, scenario)
    assert failure is not None and failure.kind == kind, failure
    for w in words:
        assert w in failure.message, failure.message
    _still_fine(good)


def test_an_honest_frame_passes_and_the_childs_text_is_bounded(monkeypatch, good):
    failure, codes, enc = _forged(monkeypatch, good, "honest")
    assert failure is None and codes.shape == (3, hostile.LATENT)
    assert len(enc.notes) <= 11 and all(len(n) <= 300 for n in enc.notes)  # 100 notes of 5,000 characters sent


def test_a_huge_latent_dim_is_refused_before_anything_runs(tmp_path):
    folder = hostile.good_onnx(tmp_path / "wide", latent=hostile.LATENT)
    m = json.loads((tmp_path / "wide" / "submission.json").read_text())
    m["latent_dim"] = 100_000
    (tmp_path / "wide" / "submission.json").write_text(json.dumps(m))
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(folder, limits=FAST):
            pass
    assert info.value.kind == "invalid_submission" and "256" in info.value.message
    # an organizer may raise the cap: the load passes it, the session then checks the real model
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(folder, limits=Limits(max_latent_dim=200_000)) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "bad_output"  # the model returns 4 dims, not 100,000


def test_challenge_limits_carry_the_latent_cap_and_scratch(tmp_path):
    from harness.errors import InputError
    from harness.grading.challenge import load_challenge
    from harness.grading.jobs import sandbox_limits

    path = tmp_path / "c.toml"
    base = 'name = "c"\n[splits.public]\ndatasets = ["dummy"]\n[ranking]\nvalues = ["mig.discrete_mig"]\n'
    path.write_text(base + "[limits]\nmax_latent_dim = 64\nscratch_mb = 16\n")
    challenge = load_challenge(path)
    limits = sandbox_limits(challenge.evaluation_config()["limits"])
    assert (limits.max_latent_dim, limits.scratch_mb) == (64, 16)
    path.write_text(base + "[limits]\nmax_latent_dim = 0\n")
    with pytest.raises(InputError, match="max_latent_dim"):
        load_challenge(path)


# --- 7: scores from batch order -----------------------------------------------------------------

def _position_encoder(folder) -> str:
    """Pixel-blind: reads the dummy dataset's factors off the image's position in its batch
    (grid order is C order over factor sizes 4, 5, 6), as the attacker of issue 19 did."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    side = 16
    f = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["p"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["p", "thirty"], ["p30"]), helper.make_node("Floor", ["p30"], ["f0"]),
        helper.make_node("Div", ["p", "six"], ["p6"]), helper.make_node("Floor", ["p6"], ["p6f"]),
        helper.make_node("Mod", ["p6f", "five"], ["f1"], fmod=1),
        helper.make_node("Mod", ["p", "six"], ["f2"], fmod=1),
        helper.make_node("Mul", ["p", "nought"], ["f3"]),
        *[helper.make_node("Unsqueeze", [f"f{k}", "axis1"], [f"c{k}"]) for k in range(4)],
        helper.make_node("Concat", ["c0", "c1", "c2", "c3"], ["mean"], axis=1),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array(1, np.int64), "one"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             f("thirty", 30), f("six", 6), f("five", 5), f("nought", 0)]
    graph = helper.make_graph(nodes, "position", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              ["N", 1, side, side])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "encoder.onnx"))
    return hostile.write_manifest(folder, hostile.manifest(input={"channels": 1, "height": side, "width": side},
                                                           latent_dim=4))


def _counter_encoder(folder, latent=4) -> str:
    """Pixel-blind and stateful: code = how many batches it has seen (TorchScript keeps state)."""
    import torch

    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            code = torch.zeros((x.shape[0], 4)) + 0.0 * x.flatten(1)[:, :4]
            code[:, 0] = float(self.calls)
            return code

    os.makedirs(folder, exist_ok=True)
    torch.jit.save(torch.jit.script(Counter()), os.path.join(folder, "encoder.pt"))
    return hostile.write_manifest(folder, hostile.manifest(format="torchscript", model="encoder.pt",
                                                           input={"channels": 1, "height": 16, "width": 16},
                                                           latent_dim=latent))


def _chance_mig(in_grid_order: np.ndarray, draws: int = 30) -> float:
    """The highest MIG of ``in_grid_order``'s codes dealt to the grid points in random orders
    (seeded): what "at chance" means for this code on the 120-point dummy grid."""
    from harness import datasets, metrics

    ds = datasets.load("dummy")
    factors = ds.index_to_factors(np.arange(ds.num_observations))
    rng = np.random.default_rng(0)
    best = 0.0
    for _ in range(draws):
        codes = np.empty_like(in_grid_order)
        codes[rng.permutation(len(codes))] = in_grid_order
        best = max(best, metrics.mig(codes, factors, n_bootstrap=0)["discrete_mig"])
    return best


SMALL_MIG_DCI = {"mig": {"num_train": 2000, "n_bootstrap": 10},
                 "dci": {"num_train": 600, "num_test": 300, "n_jobs": 1, "n_bootstrap": 10}}


def test_a_pixel_blind_encoder_scores_at_chance(tmp_path):
    from harness import datasets, metrics
    from harness.evaluation import evaluate_dataset

    folder = _position_encoder(str(tmp_path / "position"))
    # the attack is real: fed in grid order (what the plan used to send), it reads every factor
    import onnxruntime as ort

    ds = datasets.load("dummy")
    idx = np.arange(ds.num_observations)
    sess = ort.InferenceSession(os.path.join(folder, "encoder.onnx"))
    in_order = sess.run(None, {"x": np.zeros((len(idx), 1, 16, 16), np.float32)})[0]
    assert metrics.mig(in_order, ds.index_to_factors(idx))["discrete_mig"] > 0.7
    scores = evaluate_dataset(folder, "dummy", preset=None, metrics=["mig", "dci"], metric_params=SMALL_MIG_DCI,
                              limits=FAST, device="cpu", progress=False)["metrics"]
    assert scores["mig"]["discrete_mig"] <= _chance_mig(in_order) + 0.02, scores["mig"]
    assert scores["dci"]["disentanglement"] < 0.3, scores["dci"]


def test_a_stateful_encoder_counting_its_calls_scores_at_chance(tmp_path):
    from harness import datasets, metrics
    from harness.evaluation import evaluate_dataset

    folder = _counter_encoder(str(tmp_path / "counter"))
    # batches of 16 grid points: in grid order the call count tracks the first factor (MIG 0.39)
    ds = datasets.load("dummy")
    idx = np.arange(ds.num_observations)
    in_order = np.zeros((len(idx), 4), np.float32)
    in_order[:, 0] = idx // 16 + 1
    assert metrics.mig(in_order, ds.index_to_factors(idx))["discrete_mig"] > 0.3
    scores = evaluate_dataset(folder, "dummy", preset=None, metrics=["mig"],
                              metric_params={"mig": SMALL_MIG_DCI["mig"]},
                              limits=Limits(wall_seconds=60, load_wall_seconds=120, batch_size=16),
                              device="cpu", progress=False)["metrics"]
    assert scores["mig"]["discrete_mig"] <= _chance_mig(in_order) + 0.02, scores["mig"]


# --- 11: small fixes ----------------------------------------------------------------------------

def test_exit_classification_rules():
    base = dict(what="encoding a batch of 8", wall_limit=5.0, cpu_limit=9.0, memory_mb=512, file_size_mb=64)
    assert classify_exit(ExitFacts(code=-9, killed_for_wall=True, **base)).kind == "timeout"
    assert classify_exit(ExitFacts(code=-9, oom_killed=True, **base)).kind == "memory_exceeded"
    assert classify_exit(ExitFacts(code=-24, **base)).kind == "timeout"  # SIGXCPU
    assert classify_exit(ExitFacts(code=-25, **base)).kind == "runtime_error"  # SIGXFSZ
    assert classify_exit(ExitFacts(code=-11, **base)).kind == "crashed"
    assert classify_exit(ExitFacts(code=1, log_tail="ImportError: failed to map segment from shared object",
                                   **base)).kind == "memory_exceeded"
    assert classify_exit(ExitFacts(code=0, **base)).kind == "crashed"
    # the model's log never makes its failure ours
    assert classify_exit(ExitFacts(code=1, log_tail="infra_error", **base)).kind != "infra_error"


def test_a_tiny_memory_limit_is_memory_exceeded_not_load_error(good):
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(good), limits=Limits(memory_mb=200, wall_seconds=60)) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "memory_exceeded", (info.value.message, info.value.detail)


@pytest.mark.skipif(not ROOT, reason="sandbox uids are only leased as root")
def test_sandbox_uids_are_leased_machine_wide(tmp_path):
    from harness.sandbox.backends import sandbox_uid

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from harness.sandbox.backends import sandbox_uid\n"
                               "print(sandbox_uid(), flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        held = int(holder.stdout.readline())
        from harness.sandbox import backends

        assert not backends._lease(held)  # another live process holds it
        mine = {sandbox_uid() for _ in range(20)}
        assert held not in mine and len(mine) == 20
        for uid in mine:
            release_uid(uid)
    finally:
        holder.kill()
        holder.wait()
    assert backends._lease(held)  # the kernel dropped the dead holder's lock
    release_uid(held)


def test_failure_details_carry_the_models_frames_not_ours(tmp_path, good):
    folder = hostile.torchscript(tmp_path / "raise", "raise")
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(folder), limits=FAST) as enc:
            enc.encode(hostile.images(2))
    detail = info.value.detail or ""
    assert "deliberate failure in forward" in detail
    # what the model wrote while holding images never reaches the message that boards and status show
    assert "deliberate" not in info.value.message and "forward raised" in info.value.message
    assert "harness/sandbox" not in detail and "launcher.py" not in detail, detail


def test_frame_header_struct_is_what_the_forger_speaks():
    from harness.sandbox import protocol

    assert protocol.FRAME.format == struct.Struct("!IQ").format


# --- 10: text a participant controls never reaches the terminal raw -------------------------------

def test_a_models_exception_text_cannot_steer_the_terminal(tmp_path):
    folder = hostile.torchscript(tmp_path / "esc", "raise_escapes")
    out = subprocess.run([sys.executable, "-m", "harness", "validate", folder], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1, out.stderr
    printed = out.stdout + out.stderr
    assert "\x1b" not in printed and "\x07" not in printed
    assert "\\x1b]0;pwned" in printed  # shown, escaped, so the organizer sees what was tried
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("INVALID (runtime_error)")
    assert not any(line.startswith("VALID") for line in lines)  # the fake verdict stays indented


# --- 6: the grader's own memory -----------------------------------------------------------------

def greedy_job(job: dict) -> dict:
    """A job whose trusted side needs far more memory than its limit (what a huge code table did)."""
    table = bytearray(job["megabytes"] << 20)
    return {"bytes": len(table)}


def test_the_trusted_job_process_has_a_memory_limit_of_its_own(tmp_path, monkeypatch):
    from harness.grading.worker import WorkerProcess

    tests = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    spec = {"job_fn": "test_containment_sandbox:greedy_job", "job_memory_mb": 1024, "job": {"megabytes": 2048}}
    outcome = WorkerProcess(spec, tmp_path / "w", log_cap_bytes=1 << 16, time_limit=120).wait()
    assert outcome["status"] == "failed" and outcome["final"] is True, outcome
    assert outcome["failure"]["kind"] == "infra_error" and "job_memory_mb" in outcome["failure"]["message"]
    # the same job with room for it runs
    spec["job_memory_mb"], spec["job"]["megabytes"] = 4096, 512
    outcome = WorkerProcess(spec, tmp_path / "w2", log_cap_bytes=1 << 16, time_limit=120).wait()
    assert outcome["status"] == "ok", outcome


def test_the_code_table_is_budgeted_before_anything_is_encoded():
    from harness import datasets
    from harness.errors import InputError
    from harness.evaluation.evaluate import resolve_metrics, run_dataset

    calls = []

    def encode(images):
        calls.append(len(images))
        return np.zeros((len(images), 4), np.float32)

    specs = resolve_metrics(None, ["mig"], {"mig": {"num_train": 500, "n_bootstrap": 10}})
    with pytest.raises(InputError, match="budget"):
        run_dataset(datasets.load("dummy"), specs, encode, code_dim=256, max_table_mb=0.01, with_diagnostics=False)
    assert calls == []
    entry, _ = run_dataset(datasets.load("dummy"), specs, encode, code_dim=4, with_diagnostics=False)
    assert sum(calls) == entry["timing"]["images_encoded"] > 0


# --- blame: the whole job's time is the model's budget too ------------------------------------

def test_a_model_over_its_total_budget_is_the_participants_timeout(tmp_path, good):
    from harness.grading.jobs import sandbox_limits

    limits = sandbox_limits({"wall_seconds": 60, "memory_mb": 4096, "threads": 1}, job_seconds=8)
    assert limits.total_wall_seconds == 6  # the rest of the job is for the metrics
    folder = hostile.onnx_forever(tmp_path / "forever")
    t0 = time.monotonic()
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(folder), limits=limits) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "timeout" and "whole wall-clock budget" in info.value.message, info.value
    assert time.monotonic() - t0 < 30  # the per-call limit (60 s) was not what stopped it
    _still_fine(good)
