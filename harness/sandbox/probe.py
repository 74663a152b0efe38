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


def _unix_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    finally:
        s.close()
    return f"connected to the unix socket {path}"


def _socketpair():
    a, b = socket.socketpair()
    a.close()
    b.close()
    return "made a socketpair"


def _spawn():
    import subprocess

    subprocess.run(["/bin/true"], check=True, timeout=10)
    return "ran /bin/true in a new process"


def _fill_scratch(folder, megabytes):
    """Write past the scratch quota in files under the per-file limit. Only a full folder (ENOSPC,
    EDQUOT) counts as contained: a scratch folder the model cannot write at all is a broken sandbox
    (models that keep a cache fail in it), reported as not contained."""
    chunk = b"x" * (1 << 20)
    written = 0
    names = [os.path.join(folder, f"fill-{i}") for i in range(megabytes // 16 + 2)]
    try:
        for name in names:
            with open(name, "wb") as fh:
                for _ in range(16):
                    fh.write(chunk)
                    fh.flush()
                    written += 1
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            return f"the scratch folder is not writable ({errno.errorcode.get(exc.errno, exc.errno)} after {written} MB)"
        raise
    finally:
        for name in names:
            try:
                os.unlink(name)
            except OSError:
                pass
    return f"wrote {written} MB into the scratch folder"


def _forked_memory(megabytes):
    """Children that each touch ``megabytes``: what RLIMIT_AS (per process) cannot bound."""
    pids = []
    try:
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                block = bytearray(megabytes << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(5)
                os._exit(0)
            pids.append(pid)
    except OSError as exc:
        raise OSError(exc.errno, f"fork refused after {len(pids)} children") from None
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    killed = sum(os.WIFSIGNALED(st) for st in statuses)
    if killed:
        raise OSError(errno.ENOMEM, f"{killed} of {len(pids)} children killed at the memory limit")
    return f"{len(pids)} children held {megabytes} MB each"


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
    if targets.get("unix_socket"):
        checks["unix_connect"] = _attempt(lambda: _unix_connect(targets["unix_socket"]))
        checks["socketpair"] = _attempt(_socketpair)
    if targets.get("spawn"):
        checks["spawn"] = _attempt(_spawn)
    if targets.get("scratch_mb"):
        checks["scratch_quota"] = _attempt(lambda: _fill_scratch(cfg["write_paths"][0], targets["scratch_mb"]))
    if targets.get("forked_memory_mb"):
        checks["forked_memory"] = _attempt(lambda: _forked_memory(targets["forked_memory_mb"]))
    for d in targets.get("empty_dirs", []):
        try:
            entries = os.listdir(d)
        except OSError as exc:
            entries = []
        checks[f"empty:{d}"] = {"contained": not entries, "detail": f"{len(entries)} entries"}
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
