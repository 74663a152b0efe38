"""The docker backend: one locked-down container per encoder session, so one per grading job.

Needs a running Docker engine (``.ci/docker-setup.sh`` starts Debian's ``docker.io`` where it can);
without one these tests skip with the reason. No registry is reachable, so the test image is built
from this machine's own Python with ``docker import`` (:func:`harness.sandbox.docker.build_image_from_host`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.sandbox import docker as docker_backend
from harness.grading import load_challenge
from helpers_grading import make_submission, write_challenge

TEST_IMAGE = "harness-test-host:latest"


def sandbox_job(job: dict) -> dict:
    """A job through the real sandbox: encode the dummy grid, report the container that ran it."""
    from harness import datasets, sandbox, submission
    from harness.sandbox import Limits

    ds = datasets.load(job["dataset"])
    images = ds.observations(np.arange(ds.num_observations))
    with submission.load(job["submission_path"]) as sub, sandbox.open_encoder(
            sub, backend=job["backend"], device="cpu",
            limits=Limits(memory_mb=job["limits"]["memory_mb"], threads=job["limits"]["threads"])) as enc:
        codes = enc.encode(images)
        container = docker_backend.client().containers.get(enc._proc.container_id).attrs
    factors = ds.index_to_factors(np.arange(ds.num_observations))
    corr = [abs(np.corrcoef(codes[:, k], factors[:, k])[0, 1]) for k in range(3)]
    host = container["HostConfig"]
    return {"dataset": {"name": ds.name, "factor_names": ds.factor_names, "factor_sizes": ds.factor_sizes},
            "preset": job["preset"], "seed": job["seed"],
            "metrics": {"mig": {"discrete_mig": float(np.mean(corr))}, "sap": {"sap_score": float(min(corr))}},
            "timing": {"encode_s": 0.0, "metrics_s": {}, "total_s": 0.0, "images_encoded": len(images)},
            "container": {"id": container["Id"], "network": host["NetworkMode"], "read_only": host["ReadonlyRootfs"],
                          "cap_drop": host["CapDrop"], "security_opt": host["SecurityOpt"],
                          "memory": host["Memory"], "pids": host["PidsLimit"], "binds": host["Binds"],
                          "user": container["Config"]["User"]},
            "layers": enc.layers}


@pytest.fixture(scope="session")
def docker_image():
    ok, why = _engine()
    if not ok:
        pytest.skip(f"no Docker engine: {why}")
    lock_path = Path(tempfile.gettempdir()) / "harness-test-image.lock"
    with open(lock_path, "w") as lock:  # pytest-xdist workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = docker_backend.client()
        try:
            labels = client.images.get(TEST_IMAGE).labels or {}
            stale = (docker_backend.FORMATS_LABEL not in labels  # an image of an older builder
                     or not labels.get(docker_backend.READ_PATHS_LABEL, "").startswith(
                         os.path.realpath(os.sys.base_prefix)))
        except Exception:  # noqa: BLE001 - missing
            stale = True
        finally:
            client.close()
        if stale:
            docker_backend.build_image_from_host(TEST_IMAGE)
    client = docker_backend.client()
    try:  # an engine that cannot start containers here (nested, no cgroups) is a machine limit
        client.containers.run(TEST_IMAGE, ["/usr/local/bin/python3", "-c", "print(1)"], remove=True,
                              network_mode="none")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the Docker engine cannot run a container here: {str(exc)[:200]}")
    finally:
        client.close()
    before = os.environ.get("HARNESS_DOCKER_IMAGE")
    os.environ["HARNESS_DOCKER_IMAGE"] = TEST_IMAGE
    yield TEST_IMAGE
    if before is None:
        os.environ.pop("HARNESS_DOCKER_IMAGE", None)
    else:
        os.environ["HARNESS_DOCKER_IMAGE"] = before


def _engine():
    try:
        c = docker_backend.client(timeout=5)
        c.ping()
        c.close()
        return True, "ok"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"


def test_container_options_lock_everything_down():
    from harness.sandbox import Limits

    opts = docker_backend.container_options(
        image="img", command=["python3"], mounts={"/h/model": ("/sandbox/model", "ro"), "/h/s": ("/sandbox/scratch", "rw")},
        limits=Limits(memory_mb=1024, threads=2, max_processes=64), uid=12345, env={"HOME": "/sandbox/scratch"})
    assert opts["network_mode"] == "none" and opts["read_only"] is True
    assert opts["cap_drop"] == ["ALL"] and opts["security_opt"] == ["no-new-privileges"]
    assert (opts["mem_limit"], opts["memswap_limit"], opts["pids_limit"], opts["nano_cpus"]) == ("1024m", "1024m", 64, 2e9)
    assert opts["volumes"]["/h/model"] == {"bind": "/sandbox/model", "mode": "ro"}
    assert opts["user"] == "12345:12345"


def test_docker_session_is_locked_down_and_encodes_like_the_process_backend(tmp_path, docker_image):
    from harness import sandbox, submission
    from harness.sandbox import Limits

    sub_dir = make_submission(tmp_path, "dock", {})
    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 1), dtype=np.uint8)
    with submission.load(sub_dir) as sub:
        with sandbox.open_encoder(sub, backend="process", limits=Limits(threads=1), device="cpu") as enc:
            expected = enc.encode(images)
        with sandbox.open_encoder(sub, backend="docker", limits=Limits(memory_mb=1536, threads=1), device="cpu") as enc:
            codes = enc.encode(images)
            cid = enc._proc.container_id
            attrs = docker_backend.client().containers.get(cid).attrs
            layers = enc.layers
    np.testing.assert_allclose(codes, expected, rtol=1e-6)
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 1536 * 2**20 and host["MemorySwap"] == 1536 * 2**20 and host["PidsLimit"] == 256
    assert any(b.endswith(":/sandbox/model:ro") for b in host["Binds"])
    assert attrs["Config"]["User"] and not attrs["Config"]["User"].startswith("0:")
    assert any(layer.startswith("docker:net=none") for layer in layers)
    assert "size=64m" in host["Tmpfs"]["/sandbox/scratch"] and "scratch_quota:64m" in layers  # bounded disk
    with pytest.raises(Exception, match="No such container|404"):
        docker_backend.client().containers.get(cid)  # removed when the session closed


def test_missing_image_is_reported_not_raised(monkeypatch, docker_image):
    monkeypatch.setenv("HARNESS_DOCKER_IMAGE", "harness-no-such-image:0")
    ok, why = docker_backend.available()
    assert not ok and "not found" in why and "docker build" in why


def test_grade_with_docker_runs_one_container_per_job(tmp_path, job_record, docker_image):
    from harness.grading import Store, build_board, grade

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {})
    make_submission(subs, "beta", {})
    text = (write_challenge(tmp_path / "c.toml").read_text()
            + f'[sandbox]\nbackend = "docker"\nimage = "{docker_image}"\n')
    (tmp_path / "c.toml").write_text(text)
    challenge = load_challenge(tmp_path / "c.toml")
    db = tmp_path / "g.db"
    summary = grade([subs], challenge, db, workers=2, job_fn="test_grading_docker:sandbox_job")
    assert summary.counts["finished"] == 2, Store(db).jobs()[0]["failure_message"]
    with Store(db) as store:
        results = [json.loads(r["result"]) for r in store.jobs()]
        board = build_board(store)
    ids = {r["container"]["id"] for r in results}
    assert len(ids) == 2  # one container per job
    for r in results:
        c = r["container"]
        assert c["network"] == "none" and c["read_only"] and c["cap_drop"] == ["ALL"]
        assert c["memory"] == 2048 * 2**20
        assert r["metrics"]["mig"]["discrete_mig"] > 0.99  # the encoder reads each band: a clean code
    assert len(board.rows) == 2


def test_a_rebuilt_image_changes_the_config_and_so_regrades(monkeypatch, docker_image):
    import io

    from harness.grading.challenge import parse_challenge

    text = ('name = "d"\n[splits.public]\ndatasets = ["dummy"]\n[ranking]\nvalues = ["mig.discrete_mig"]\n'
            '[sandbox]\nbackend = "docker"\n')
    client = docker_backend.client()
    try:
        client.images.get(docker_image).tag("harness-test-identity", "v")
        monkeypatch.setenv("HARNESS_DOCKER_IMAGE", "harness-test-identity:v")
        first = parse_challenge(text).config_hash()
        assert parse_challenge(text).config_hash() == first  # stable while nothing changes
        # the same tag, rebuilt with other content (offline: FROM scratch needs no pull)
        client.images.build(fileobj=io.BytesIO(b"FROM scratch\nLABEL rebuilt=1\n"), tag="harness-test-identity:v")
        assert parse_challenge(text).config_hash() != first
        monkeypatch.setenv("HARNESS_DOCKER_IMAGE", docker_image)  # pointing elsewhere changes it too
        assert parse_challenge(text).config_hash() != first
    finally:
        try:
            client.images.remove("harness-test-identity:v", force=True)
        except Exception:  # noqa: BLE001
            pass
        client.close()


def _harness(*args, env_extra=None, timeout=600):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _remove_image(tag):
    client = docker_backend.client()
    try:
        client.images.remove(tag, force=True)
    except Exception:  # noqa: BLE001 - not there
        pass
    finally:
        client.close()


@pytest.mark.slow
def test_docker_build_with_torch_runs_every_format_and_doctor_says_ready(docker_image):
    """`harness docker build --with-torch`: an offline image of this environment that loads and
    encodes a model of each format; `harness doctor --backend docker` runs one of each in it."""
    tag = "harness-test-torch:latest"
    try:
        out = _harness("docker", "build", "--with-torch", "--tag", tag)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "for onnx, torchscript, torch_export" in out.stdout
        for fmt in ("onnx", "torchscript", "torch_export"):
            assert f"model {fmt}: ok" in out.stdout, out.stdout
        doctor = _harness("doctor", "--backend", "docker", env_extra={"HARNESS_DOCKER_IMAGE": tag})
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "verdict: READY for onnx, torchscript, torch_export\n" in doctor.stdout, doctor.stdout
        assert "check scratch_quota: contained" in doctor.stdout  # writable, and full at its quota
    finally:
        _remove_image(tag)


def _venv_with_runtimes(root: Path) -> Path:
    """A venv (no system site packages) holding the ONNX runtimes: hard links of this environment's
    installs, so nothing is downloaded. Returns its python."""
    import site

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    target = next((root / "lib").glob("python3*/site-packages"))
    source = Path(site.getsitepackages()[0])
    for entry in source.iterdir():
        if entry.name.startswith(("torch", "harness", "__editable", "__pycache__")) or entry.suffix == ".pth":
            continue
        dest = target / entry.name
        copy = shutil.copytree if entry.is_dir() else shutil.copy2
        try:
            copy(entry, dest, copy_function=os.link) if entry.is_dir() else os.link(entry, dest)
        except OSError:  # another file system: a real copy
            copy(entry, dest)
    return root / "bin" / "python"


@pytest.mark.slow
def test_docker_build_from_a_venv_puts_its_packages_on_the_path(tmp_path, docker_image):
    """The venv's site-packages are not the interpreter's own: the image records them and the child
    gets them on its path (the bug: every submission was the participant's load_error)."""
    root = Path.home() / ".cache" / "harness-tests" / f"venv-{os.getpid()}"  # not /tmp: a tmpfs in the container
    shutil.rmtree(root, ignore_errors=True)
    tag = "harness-test-venv:latest"
    try:
        python = _venv_with_runtimes(root)
        out = _harness("docker", "build", "--python", str(python), "--tag", tag)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "model onnx: ok" in out.stdout and "for onnx\n" in out.stdout
        labels = docker_backend.client().images.get(tag).labels
        assert str(root) in labels[docker_backend.SYS_PATH_LABEL]
        # and a venv under /tmp is refused in one line (a fresh tmpfs covers /tmp in every job)
        tmp_python = _venv_with_runtimes(tmp_path / "venv")
        refused = _harness("docker", "build", "--python", str(tmp_python), "--tag", tag, "--no-check")
        assert refused.returncode == 3 and "is under /tmp" in refused.stderr
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _remove_image(tag)


def test_a_runtime_missing_from_the_image_is_infra_error_not_the_participants(tmp_path, job_record, docker_image):
    """The test image has no torch: a TorchScript submission graded in it is our infra_error (retried,
    never ranked against the participant); doctor names the formats it cannot run and exits 3."""
    from harness.grading import Store, grade
    from harness.sandbox import validate
    from harness.sandbox.doctor import write_probe_model

    sub = tmp_path / "subs" / "team-a" / "scripted"
    sub.mkdir(parents=True)
    write_probe_model(str(sub), "torchscript")
    report = validate(sub, backend="docker")
    assert report["failure"]["kind"] == "infra_error", report["failure"]
    assert "cannot import torch" in report["failure"]["message"]

    text = (write_challenge(tmp_path / "c.toml", max_attempts=2).read_text()
            + f'[sandbox]\nbackend = "docker"\nimage = "{docker_image}"\n')
    (tmp_path / "c.toml").write_text(text)
    db = tmp_path / "g.db"
    grade([tmp_path / "subs"], load_challenge(tmp_path / "c.toml"), db, workers=1)
    with Store(db) as store:
        (job,) = store.jobs()
    assert (job["state"], job["failure_kind"], job["attempts"]) == ("failed", "infra_error", 2), dict(job)

    doctor = _harness("doctor", "--backend", "docker")
    assert doctor.returncode == 3, doctor.stdout + doctor.stderr
    assert "model onnx: ok" in doctor.stdout and "model torchscript: FAIL" in doctor.stdout
    assert "verdict: READY for onnx; not for torchscript, torch_export" in doctor.stdout


def test_a_container_that_cannot_start_its_interpreter_is_infra_error(tmp_path, monkeypatch, docker_image):
    from harness.sandbox import validate

    monkeypatch.setenv("HARNESS_DOCKER_PYTHON", "/no/such/python3")
    report = validate(make_submission(tmp_path, "fine", {}), backend="docker")
    assert report["failure"]["kind"] == "infra_error", report["failure"]
