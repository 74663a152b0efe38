"""``harness doctor``: which isolation layers work on this machine, and why others do not.

:func:`probe` starts a real sandboxed child with the chosen backend, applies every layer and runs
hostile checks inside it (:mod:`harness.sandbox.probe`): read a world-readable secret file, write
outside the scratch folder, connect to a TCP port the parent listens on, fork past the process
limit, signal the parent. :func:`model_checks` then grades nothing but runs a real probe model of
each format through the backend (``harness validate``'s path): a backend that cannot load a model
is not ready, however well it contains one.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings

from harness.errors import SubmissionFailure
from harness.sandbox import cgroups, protocol
from harness.sandbox.backends import BACKENDS, launcher_config, prepare_sandbox_dir, release_uid
from harness.sandbox.limits import Limits


def probe(backend: str = "process", *, limits: Limits | None = None, secret_files=(), forbidden_writes=(),
          tcp: bool = True, forks: bool = True, sockets: bool = True, scratch: bool = True,
          forked_memory_mb: int | None = None, without=(), timeout: float = 60.0) -> dict:
    """Start a probe child with ``backend`` and return its layers, per-layer report and checks.

    ``secret_files`` are extra paths the child must not read (e.g. a dataset file). ``without``
    switches layers off (``"namespaces"``, ``"landlock"``, ``"seccomp"``, ``"uid"``, ``"rlimits"``,
    ``"cgroup"``) to show what each one contributes. ``forked_memory_mb``: children that each touch
    that much memory (the cgroup's job; seccomp stops the fork first unless it is switched off).
    """
    limits = limits or Limits()
    impl = BACKENDS[backend]()
    ok, why = impl.available()
    if not ok:
        return {"backend": backend, "available": False, "reason": why}
    plan = impl.layers(limits, "cpu")
    use_cgroup = impl.uses_cgroup and "cgroup" not in without
    for layer in without:
        if layer == "cgroup":
            continue
        if layer not in plan:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join([*plan, 'cgroup'])}")
        if layer == "uid":
            release_uid(plan["uid"])
        plan[layer] = None if layer == "uid" else False
    sd = prepare_sandbox_dir(None, uid=plan.get("uid"))
    # The probe's targets sit inside the sandbox folder, next to the model's copy: a place the child
    # can reach by path (it survives the tmpfs over /tmp), so only the layers keep it out.
    outside = os.path.join(sd.root, "outside")
    os.makedirs(outside, mode=0o755)
    os.chmod(outside, 0o755)
    secret = os.path.join(outside, "secret.txt")
    with open(secret, "w") as fh:
        fh.write("organizer secret")
    os.chmod(secret, 0o644)  # world-readable: only Landlock keeps the child out
    proc = cgroup = None
    listeners = []
    try:
        cfg = launcher_config(sd, layers=plan, limits=limits, device="cpu")
        targets = {"secret_files": [secret, *map(str, secret_files)],
                   "forbidden_writes": [os.path.join(outside, "written.txt"), *map(str, forbidden_writes)],
                   "parent_pid": os.getpid(), "empty_dirs": ["/run", "/dev/shm"]}
        if tcp:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listeners.append(listener)
            targets["tcp_port"] = listener.getsockname()[1]
        if sockets:
            path = os.path.join(outside, "grader.sock")
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(path)
            os.chmod(path, 0o777)  # anyone may connect: only the sandbox stops the child
            unix.listen(1)
            listeners.append(unix)
            targets["unix_socket"] = path
        if forks:
            targets["spawn"] = True
            if limits.max_processes:
                targets["max_forks"] = limits.max_processes + 16
        if scratch and limits.scratch_mb:
            targets["scratch_mb"] = limits.scratch_mb
        if forked_memory_mb:
            targets["forked_memory_mb"] = forked_memory_mb
        cfg["probe"] = targets
        cgroup_why = "the backend bounds the process tree itself"
        if use_cgroup:
            cgroup, cgroup_why = cgroups.create(memory_mb=limits.memory_mb, max_processes=limits.max_processes)
        elif impl.uses_cgroup:
            cgroup_why = "switched off"
        proc = impl.spawn(sd, cfg, cgroup=cgroup)
        deadline = time.monotonic() + timeout
        protocol.send(proc.stdin.fileno(), {"config": cfg}, b"", deadline)
        try:
            reply, _ = protocol.recv(proc.stdout.fileno(), deadline)
        except (protocol.ChannelClosed, protocol.Deadline):
            impl.kill(proc, sd)
            err = proc.stderr.read().decode("utf-8", "replace")[-2000:]
            return {"backend": backend, "available": True, "error": f"probe child died: {err}"}
        if not reply.get("ok"):
            return {"backend": backend, "available": True, "error": reply.get("message"), "detail": reply.get("detail")}
        layers, report = list(reply["layers"]), list(reply["report"])
        if cgroup is not None and cgroup.contains(proc.pid):
            layers += cgroup.layers
            report += cgroup.report(limits.memory_mb, limits.max_processes)
        else:
            report.append(f"cgroup: NOT applied: {cgroup_why or 'the child could not join it'}")
        result = {"backend": backend, "available": True, "layers": layers, "report": report, **reply["checks"]}
        result["leaks"] = {"secret_written": os.path.exists(os.path.join(outside, "written.txt"))}
        return result
    finally:
        if proc is not None:
            impl.kill(proc, sd)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except Exception:
                    pass
        if cgroup is not None:
            cgroup.remove()
        for listener in listeners:
            listener.close()
        sd.remove()


PROBE_FORMATS = ("onnx", "torchscript", "torch_export")
_PROBE_SHAPE = (1, 16, 16)  # channels, height, width
_PROBE_LATENT = 3


def write_probe_model(folder: str, fmt: str) -> str:
    """A tiny linear encoder of ``fmt`` with its submission.json in ``folder`` (ONNX through the onnx
    package; the torch formats need torch here). Returns the folder."""
    import json

    import numpy as np

    c, h, w = _PROBE_SHAPE
    weight = np.random.default_rng(0).standard_normal((c * h * w, _PROBE_LATENT)).astype(np.float32)
    model = {"onnx": "encoder.onnx", "torchscript": "encoder.pt", "torch_export": "encoder.pt2"}[fmt]
    path = os.path.join(folder, model)
    if fmt == "onnx":
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        graph = helper.make_graph(
            [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["z"])],
            "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, w])],
            [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", _PROBE_LATENT])],
            [numpy_helper.from_array(weight, "w")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    else:
        import torch

        class Probe(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.from_numpy(weight), requires_grad=False)

            def forward(self, x):
                return x.flatten(1) @ self.weight

        example = torch.zeros(2, c, h, w)
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch 2.13 deprecates jit; organizers still accept it
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.trace(Probe().eval(), example), path)
        else:
            batch = torch.export.Dim("batch", min=1, max=1_000_000)
            torch.export.save(torch.export.export(Probe().eval(), (example,), dynamic_shapes=({0: batch},)), path)
    with open(os.path.join(folder, "submission.json"), "w") as fh:
        json.dump({"name": f"probe-{fmt}", "format": fmt, "model": model,
                   "input": {"channels": c, "height": h, "width": w}, "latent_dim": _PROBE_LATENT,
                   "outputs": ["mean"]}, fh)
    return folder


def model_checks(backend: str, *, formats=PROBE_FORMATS, limits: Limits | None = None) -> dict:
    """Validate a probe model of each format through ``backend``: ``{fmt: {"ok", "message", "seconds"}}``.

    A format whose probe cannot be built here (no torch) is ``ok: None`` with the reason."""
    from harness.sandbox.validation import validate

    results = {}
    for fmt in formats:
        with tempfile.TemporaryDirectory(prefix="harness-probe-model-") as tmp:
            try:
                write_probe_model(tmp, fmt)
            except ImportError as exc:
                results[fmt] = {"ok": None, "message": f"skipped: cannot build a {fmt} probe here ({exc})"}
                continue
            t0 = time.monotonic()
            report = validate(tmp, backend=backend, limits=limits, probe_sizes=(1, 9))
            failure = report["failure"] or {}
            results[fmt] = {"ok": report["ok"], "seconds": round(time.monotonic() - t0, 2),
                            "message": "loads and encodes" if report["ok"] else
                            f"{failure.get('kind')}: {failure.get('message')}"}
    return results


def machine_facts() -> dict:
    from harness.sandbox import layers

    facts = {"kernel": platform.release(), "python": sys.version.split()[0], "euid": os.geteuid(),
             "landlock_abi": layers.landlock_abi()}
    try:
        import pyseccomp  # noqa: F401

        facts["seccomp"] = "pyseccomp + libseccomp found"
    except Exception as exc:
        facts["seccomp"] = f"unavailable: {exc}"
    facts["bwrap"] = shutil.which("bwrap") or "not installed"
    docker = shutil.which("docker")
    if docker:
        try:
            out = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                                 timeout=10)
            facts["docker"] = f"engine {out.stdout.strip()}" if out.returncode == 0 else \
                f"client only: {out.stderr.strip()[:120]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            facts["docker"] = f"not usable: {exc}"
    else:
        facts["docker"] = "not installed"
    try:
        import onnxruntime as ort

        facts["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as exc:  # pragma: no cover
        facts["onnxruntime_providers"] = f"unavailable: {exc}"
    facts["gpu_devices"] = [d for d in os.listdir("/dev") if d.startswith("nvidia")]
    return facts


def diagnose(backends=("process", "bwrap"), *, limits: Limits | None = None) -> dict:
    """Machine facts plus a probe per backend (the ``harness doctor`` report)."""
    report = {"machine": machine_facts(), "backends": {}}
    for name in backends:
        try:
            result = probe(name, limits=limits)
        except (OSError, SubmissionFailure) as exc:
            result = {"backend": name, "available": False, "reason": str(exc)}
        if result.get("available") and not result.get("error"):
            if name == "docker":
                from harness.sandbox import docker

                result["image"] = docker.image_identity()
            result["models"] = model_checks(name, limits=limits)
            result["ready"] = [f for f, m in result["models"].items() if m["ok"]]
        report["backends"][name] = result
    return report
