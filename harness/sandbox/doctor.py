"""``harness doctor``: which isolation layers work on this machine, and why others do not.

:func:`probe` starts a real sandboxed child with the chosen backend, applies every layer and runs
hostile checks inside it (:mod:`harness.sandbox.probe`): read a world-readable secret file, write
outside the scratch folder, connect to a TCP port the parent listens on, fork past the process
limit, signal the parent.
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

from harness.errors import SubmissionFailure
from harness.sandbox import protocol
from harness.sandbox.backends import BACKENDS, launcher_config, prepare_sandbox_dir
from harness.sandbox.limits import Limits


def probe(backend: str = "process", *, limits: Limits | None = None, secret_files=(), forbidden_writes=(),
          tcp: bool = True, forks: bool = True, without=(), timeout: float = 60.0) -> dict:
    """Start a probe child with ``backend`` and return its layers, per-layer report and checks.

    ``secret_files`` are extra paths the child must not read (e.g. a dataset file). ``without``
    switches layers off (``"namespaces"``, ``"landlock"``, ``"seccomp"``, ``"uid"``, ``"rlimits"``)
    to show what each one contributes.
    """
    limits = limits or Limits()
    impl = BACKENDS[backend]()
    ok, why = impl.available()
    if not ok:
        return {"backend": backend, "available": False, "reason": why}
    tmp = tempfile.mkdtemp(prefix="harness-doctor-")
    os.chmod(tmp, 0o755)
    secret = os.path.join(tmp, "secret.txt")
    with open(secret, "w") as fh:
        fh.write("organizer secret")
    os.chmod(secret, 0o644)  # world-readable: only Landlock keeps the child out
    listener = None
    plan = impl.layers(limits, "cpu")
    for layer in without:
        if layer not in plan:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(plan)}")
        plan[layer] = None if layer == "uid" else False
    sd = prepare_sandbox_dir(None, uid=plan.get("uid"))
    proc = None
    try:
        cfg = launcher_config(sd, layers=plan, limits=limits, device="cpu")
        targets = {"secret_files": [secret, *map(str, secret_files)],
                   "forbidden_writes": [os.path.join(tmp, "written.txt"), *map(str, forbidden_writes)],
                   "parent_pid": os.getpid()}
        if tcp:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            targets["tcp_port"] = listener.getsockname()[1]
        if forks and limits.max_processes and plan.get("uid") is not None:
            targets["max_forks"] = limits.max_processes + 16
        cfg["probe"] = targets
        proc = impl.spawn(sd, cfg)
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
        result = {"backend": backend, "available": True, "layers": reply["layers"], "report": reply["report"],
                  **reply["checks"]}
        result["leaks"] = {"secret_written": os.path.exists(os.path.join(tmp, "written.txt"))}
        return result
    finally:
        if proc is not None:
            impl.kill(proc, sd)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except Exception:
                    pass
        if listener is not None:
            listener.close()
        sd.remove()
        shutil.rmtree(tmp, ignore_errors=True)


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
            report["backends"][name] = probe(name, limits=limits)
        except (OSError, SubmissionFailure) as exc:
            report["backends"][name] = {"backend": name, "available": False, "reason": str(exc)}
    return report
