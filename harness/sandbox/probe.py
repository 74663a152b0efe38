"""Containment checks run *inside* a sandboxed child, acting like hostile code would.

Used by ``harness doctor`` and by the tests: ONNX and TorchScript cannot open sockets or fork,
so these probes show what the sandbox does to code that can. Each check returns
``{"contained": bool, "detail": str}``; ``contained`` is True when the hostile action failed.
"""

from __future__ import annotations

import errno
import os
import socket
import time


def _attempt(fn) -> dict:
    try:
        detail = fn()
    except OSError as exc:
        return {"contained": True, "detail": f"{type(exc).__name__}: {errno.errorcode.get(exc.errno, exc.errno)}"}
    return {"contained": False, "detail": str(detail)}


def _read(path):
    with open(path, "rb") as fh:
        return f"read {len(fh.read(64))} bytes from {path}"


def _write(path):
    with open(path, "wb") as fh:
        fh.write(b"pwned")
    return f"wrote {path}"


def _connect(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    finally:
        s.close()
    return f"connected to 127.0.0.1:{port}"


def _fork_bomb(max_forks: int):
    pids = []
    try:
        for _ in range(max_forks):
            pid = os.fork()
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            pids.append(pid)
    except OSError as exc:
        raise OSError(exc.errno, f"fork refused after {len(pids)} processes") from None
    finally:
        for pid in pids:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return f"forked {len(pids)} processes without hitting a limit"


def run_probes(cfg: dict) -> dict:
    targets = cfg.get("probe", {})
    checks = {}
    for i, path in enumerate(targets.get("secret_files", [])):
        checks[f"read:{path}"] = _attempt(lambda p=path: _read(p))
    for path in targets.get("forbidden_writes", []):
        checks[f"write:{path}"] = _attempt(lambda p=path: _write(p))
    if targets.get("tcp_port"):
        checks["tcp_connect"] = _attempt(lambda: _connect(targets["tcp_port"]))
    if targets.get("max_forks"):
        checks["fork_bomb"] = _attempt(lambda: _fork_bomb(targets["max_forks"]))
    if targets.get("parent_pid"):
        checks["signal_parent"] = _attempt(lambda: (os.kill(targets["parent_pid"], 0), "signalled the parent")[1])
    # what the child can do and see (not containment checks; reported as facts)
    scratch = cfg["write_paths"][0]
    import harness

    facts = {"uid": os.getuid(), "env": sorted(os.environ), "cwd": os.getcwd(), "harness_from": harness.__file__}
    try:
        _write(os.path.join(scratch, "probe.txt"))
        facts["scratch_writable"] = True
    except OSError:
        facts["scratch_writable"] = False
    return {"checks": checks, "facts": facts}
