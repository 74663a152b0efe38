"""Backends start the sandboxed child; the session talks the wire protocol to it.

A backend turns a prepared sandbox folder and a launcher configuration into a running process
whose stdin/stdout carry the protocol and whose stderr is the model's log, in its own process
group (session). Backends:

``process``  (default) a plain child; the launcher applies every layer itself (namespaces,
             Landlock, seccomp, rlimits, uid). Needs nothing but Linux.
``bwrap``    the same launcher inside bubblewrap (its own PID/UTS namespaces and a filesystem that
             holds only what the child needs), then the launcher's own layers on top.
``docker``   extension point: see :mod:`harness.sandbox.docker` (issue 7 fills in the container).
``none``     no child at all: the launcher's loop runs on a thread of the calling process,
             UNSANDBOXED (trusted debugging); the same frames, so the session has one path.

To add a backend, subclass :class:`Backend`, implement ``available`` and ``spawn``, and register it
in ``BACKENDS``.
"""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass

from harness.sandbox.cgroups import join_command
from harness.sandbox.launcher import BOOTSTRAP
from harness.submission.core import copy_tree_nofollow, sweep_stale

UID_BASE = 1_600_000_000
UID_RANGE = 1_000_000
_uid_leases: dict[int, int] = {}  # uid -> descriptor of its lock file, held while the session lives


def _uid_lock_dir() -> str:
    for base in ("/run/lock", tempfile.gettempdir()):
        d = os.path.join(base, "harness-uids")
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            return d
        except OSError:
            continue
    raise OSError("no folder for sandbox uid locks (/run/lock or the temporary folder)")


def _pids_of_uid(uid: int):
    """Processes running as ``uid`` now (from /proc)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    yield int(entry)
            except OSError:
                continue


def sandbox_uid() -> int:
    """A uid no other live session on this machine uses (RLIMIT_NPROC is per uid, and kill-by-uid
    must be exact), leased until :func:`release_uid`.

    Each lease is an exclusive ``flock`` on ``/run/lock/harness-uids/<uid>``, shared by every
    grader process on the machine and released by the kernel when its holder dies; a uid that
    still has processes (a killed grader's leftovers) is skipped.
    """
    rng = random.SystemRandom()
    for _ in range(200):
        uid = UID_BASE + rng.randrange(UID_RANGE)
        if _lease(uid):
            return uid
    raise OSError("no free sandbox uid after 200 tries")


def _lease(uid: int) -> bool:
    """Take the lock of ``uid`` if no live process holds it and no process runs as it."""
    if uid in _uid_leases:
        return False
    path = os.path.join(_uid_lock_dir(), str(uid))
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # the holder before us may have unlinked the file after we opened it: lock the live one
        if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino or any(_pids_of_uid(uid)):
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return False
    _uid_leases[uid] = fd
    return True


def release_uid(uid: int | None) -> None:
    fd = _uid_leases.pop(uid, None) if uid is not None else None
    if fd is None:
        return
    try:
        os.unlink(os.path.join(_uid_lock_dir(), str(uid)))
    except OSError:
        pass
    os.close(fd)


@dataclass
class SandboxDir:
    """The folder a child sees: lib/ (launcher code, read-only), model/ (a read-only copy of the
    submission), scratch/ (its only writable place), stage/ (mount staging)."""

    root: str
    lib: str
    model: str
    scratch: str
    stage: str
    uid: int | None

    def remove(self):
        shutil.rmtree(self.root, ignore_errors=True)
        release_uid(self.uid)


def _copy_package(dest: str) -> None:
    """The launcher runs from a private copy of the few modules it needs, so the child never needs
    to see the repository or site-packages' harness (which may sit next to datasets)."""
    import harness

    src = os.path.dirname(os.path.abspath(harness.__file__))
    os.makedirs(os.path.join(dest, "harness", "sandbox"))
    for rel in ("__init__.py", "errors.py", "allocator.py", "pt2_rules.py"):
        shutil.copy(os.path.join(src, rel), os.path.join(dest, "harness", rel))
    for name in os.listdir(os.path.join(src, "sandbox")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(src, "sandbox", name), os.path.join(dest, "harness", "sandbox", name))


def _make_world_readable(top: str) -> None:
    for dirpath, dirnames, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def prepare_sandbox_dir(submission, *, uid: int | None) -> SandboxDir:
    """The child's folder. The ``submission``'s files (None: none) are copied following no link and
    must hash as they did when loaded (a participant may swap a file for a link in between)."""
    sweep_stale("harness-sbx-")
    root = tempfile.mkdtemp(prefix=f"harness-sbx-{os.getpid()}-")
    try:
        os.chmod(root, 0o755)
        sd = SandboxDir(root, os.path.join(root, "lib"), os.path.join(root, "model"),
                        os.path.join(root, "scratch"), os.path.join(root, "stage"), uid)
        _copy_package(sd.lib)
        if submission is not None:
            copy_tree_nofollow(submission.root, submission.files, sd.model, expect_sha256=submission.sha256)
        else:
            os.makedirs(sd.model)
        _make_world_readable(sd.lib)
        os.makedirs(sd.scratch, mode=0o700)
        os.makedirs(sd.stage, mode=0o700)
        if uid is not None:
            os.chown(sd.scratch, uid, uid)
        return sd
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def clean_env(sd: SandboxDir, threads: int) -> dict:
    t = str(threads)
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": sd.scratch, "TMPDIR": sd.scratch,
            "OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t, "NUMEXPR_NUM_THREADS": t,
            "VECLIB_MAXIMUM_THREADS": t, "TORCHINDUCTOR_CACHE_DIR": os.path.join(sd.scratch, "inductor")}


def child_sys_path(lib: str) -> list[str]:
    """sys.path for the child: the private lib, then the interpreter's own entries (stdlib,
    site-packages), never the repository or the working directory."""
    prefixes = tuple({sys.prefix, sys.base_prefix})
    # lib comes first, so its copy of harness wins over one pip-installed in site-packages
    keep = [p for p in sys.path if p and os.path.isabs(p) and p.startswith(prefixes)]
    return [lib] + list(dict.fromkeys(keep))


def python_command(lib: str) -> list[str]:
    return [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP.format(path=child_sys_path(lib))]


def interpreter_paths() -> list[str]:
    paths = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    return sorted(p for p in paths if os.path.exists(p))


SYSTEM_READ_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/ld.so.conf",
                     "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group",
                     "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys/kernel",
                     "/sys/devices/system/cpu", "/sys/devices/system/node", "/sys/fs/cgroup",
                     "/dev/urandom", "/dev/random", "/dev/zero")


def gpu_devices() -> list[str]:
    return sorted(os.path.join("/dev", d) for d in os.listdir("/dev") if d.startswith("nvidia")) + \
        [p for p in ("/dev/dri",) if os.path.exists(p)]


def launcher_config(sd: SandboxDir, *, layers: dict, limits, device: str, submission=None) -> dict:
    """The configuration frame the launcher receives first."""
    read_paths = [p for p in SYSTEM_READ_PATHS] + interpreter_paths() + [sd.lib, sd.model]
    devices = ["/dev/null"]
    if device in ("cuda", "auto"):
        devices += gpu_devices()
        read_paths += ["/proc/driver", "/sys/bus/pci", "/sys/devices", "/sys/module/nvidia"]
    memory_mb = limits.memory_mb
    cfg = {
        "layers": layers,
        "read_paths": read_paths,
        "write_paths": [sd.scratch],
        "devices": devices,
        "expose_paths": interpreter_paths() + [sd.lib, sd.model, sd.scratch],
        "stage_dir": sd.stage,
        "keep_paths": [sd.root] + interpreter_paths(),
        "scratch_mb": limits.scratch_mb,
        "rlimits": {"memory_mb": memory_mb, "cpu_seconds": limits.cpu_seconds, "file_size_mb": limits.file_size_mb,
                    "open_files": limits.open_files, "max_processes": limits.max_processes},
        "threads": limits.threads,
        "device": device,
    }
    if submission is not None:
        cfg.update({
            "format": submission.format,
            "model_root": sd.model,
            "model_path": os.path.join(sd.model, submission.manifest["model"]),
            "num_outputs": len(submission.outputs),
            "latent_dim": submission.latent_dim,
            "input_shape": list(submission.input_shape),
            "input_range": submission.input_range,
            "input_layout": submission.input_layout,
        })
    return cfg


class Backend:
    """How a child is started. Subclasses fill ``available`` and ``spawn``."""

    name = "?"
    isolated = True
    uses_cgroup = True  # the session makes a memory/pids cgroup and the child joins it at start
    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def layers(self, limits, device: str) -> dict:
        """Which layers the launcher applies itself inside this backend."""
        uid = sandbox_uid() if os.geteuid() == 0 else None
        return {"namespaces": True, "landlock": True, "seccomp": True, "rlimits": True, "uid": uid,
                "no_new_privs": True}

    def spawn(self, sd: SandboxDir, cfg: dict, cgroup=None) -> subprocess.Popen:
        raise NotImplementedError

    def kill(self, proc: subprocess.Popen, sd: SandboxDir) -> None:
        """Kill the child, its process group and anything left running under its uid."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if sd.uid is not None:
            kill_uid(sd.uid)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            pass


def kill_uid(uid: int) -> int:
    """SIGKILL every process running as ``uid`` (a sandbox uid, unique to one session)."""
    killed = 0
    for _ in range(3):
        found = 0
        for pid in _pids_of_uid(uid):
            try:
                os.kill(pid, signal.SIGKILL)
                found += 1
            except (ProcessLookupError, PermissionError):
                continue
        killed += found
        if not found:
            break
        time.sleep(0.05)
    return killed


class ProcessBackend(Backend):
    name = "process"

    def available(self):
        return sys.platform.startswith("linux"), "Linux only" if not sys.platform.startswith("linux") else "ok"

    def spawn(self, sd, cfg, cgroup=None):
        return subprocess.Popen(join_command(cgroup, python_command(sd.lib)),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=clean_env(sd, cfg["threads"]), cwd=sd.scratch, start_new_session=True,
                                close_fds=True, bufsize=0)


class BwrapBackend(ProcessBackend):
    name = "bwrap"

    def available(self):
        path = shutil.which("bwrap")
        if not path:
            return False, "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
        try:
            out = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-net", "true"], capture_output=True,
                                 text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"bwrap does not run: {exc}"
        if out.returncode != 0:
            return False, f"bwrap cannot create namespaces here: {out.stderr.strip()[:200]}"
        return True, path

    def layers(self, limits, device):
        lay = super().layers(limits, device)
        lay["namespaces"] = False  # bwrap made them (plus PID and UTS); no mount namespace left to us
        return lay

    def spawn(self, sd, cfg, cgroup=None):
        mounts = [("--ro-bind", p) for p in sorted(set(cfg["read_paths"]))
                  if os.path.exists(p) and not p.startswith(("/proc", "/dev", sd.root))]
        mounts += [("--ro-bind", sd.lib), ("--ro-bind", sd.model), ("--bind", sd.scratch)]
        external = ["bwrap:net,ipc,pid,uts,mount"]
        scratch_mb = cfg.get("scratch_mb")
        cfg["scratch_mb"] = None  # no mount namespace left to the launcher: bwrap makes the tmpfs
        mounts += [("--dev-bind", d) for d in cfg["devices"] if d != "/dev/null"]
        targets = {p for _, p in mounts}
        # bwrap creates missing parents with mode 0700, which the dropped uid cannot traverse
        parents = set()
        for _, p in mounts:
            parts = p.split("/")
            for i in range(2, len(parts)):
                a = "/".join(parts[:i])
                if a not in targets and not any(a.startswith(t + "/") for t in targets):
                    parents.add(a)
        binds = []
        for a in sorted(parents, key=lambda x: (x.count("/"), x)):
            if a not in ("/proc", "/dev", "/tmp"):
                binds += ["--perms", "0755", "--dir", a]
        for flag, p in sorted(mounts, key=lambda m: (m[1].count("/"), m[1])):
            if p == sd.scratch and scratch_mb:
                # world-writable is fine: only the child lives in this mount namespace
                binds += ["--perms", "1777", "--size", str(int(scratch_mb) * 1024 * 1024), "--tmpfs", p]
                external.append(f"scratch_quota:{int(scratch_mb)}m")
                continue
            binds += [flag, p, p]
        cmd = ["bwrap", "--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
               "--die-with-parent", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", *binds,
               "--chdir", sd.scratch]
        if os.geteuid() == 0:
            # root: bwrap drops capabilities; keep the two the launcher needs to switch uid.
            cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        cmd += python_command(sd.lib)
        cfg["external_layers"] = external
        cfg["expose_paths"] = []  # only bound paths exist inside, all reachable
        return subprocess.Popen(join_command(cgroup, cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                env=clean_env(sd, cfg["threads"]), cwd=sd.scratch, start_new_session=True,
                                close_fds=True, bufsize=0)


class _InProcessChild:
    """What the session sees of a backend "none" child: the launcher's serve loop on a thread of
    this process, speaking the same frames over pipes (so the session has one code path)."""

    def __init__(self, cfg: dict):
        import threading

        from harness.sandbox import launcher

        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        self._log_r, self._log_w = os.pipe()  # the model prints to our own stderr; nothing comes here
        self.stdin = os.fdopen(self._to_child_w, "wb", buffering=0)
        self.stdout = os.fdopen(self._from_child_r, "rb", buffering=0)
        self.stderr = os.fdopen(self._log_r, "rb", buffering=0)
        self.pid = os.getpid()
        self.returncode = None

        def run():
            code = 0
            try:
                from harness.sandbox import protocol

                header, _ = protocol.recv(to_child_r)
                launcher.serve(header["config"], to_child_r, from_child_w)
            except Exception:  # noqa: BLE001 - the session sees a closed channel
                code = 1
            finally:
                for fd in (to_child_r, from_child_w, self._log_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                self.returncode = code

        self._thread = threading.Thread(target=run, name="harness-in-process-model", daemon=True)
        self._thread.start()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            self._thread.join(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("in-process model", timeout)
        return self.returncode

    def abandon(self):
        """A thread cannot be killed: close our end (its loop ends at the next frame) and report it
        as killed, so the session stops waiting for a model that may never return."""
        try:
            self.stdin.close()
        except OSError:
            pass
        if self.returncode is None:
            self.returncode = -signal.SIGKILL


class InProcessBackend(Backend):
    """``none``: the model runs in the calling process, UNSANDBOXED (trusted debugging only)."""

    name = "none"
    isolated = False
    uses_cgroup = False

    def available(self):
        return True, "ok"

    def layers(self, limits, device):
        return {"namespaces": False, "landlock": False, "seccomp": False, "rlimits": False, "uid": None,
                "no_new_privs": False}

    def spawn(self, sd, cfg, cgroup=None):
        cfg["in_process"] = True
        return _InProcessChild(cfg)

    def kill(self, proc, sd):
        proc.abandon()


class DockerBackend(Backend):
    """Delegates to :mod:`harness.sandbox.docker` (the container details belong to issue 7)."""

    name = "docker"

    def _impl(self):
        from harness.sandbox import docker

        return docker

    def available(self):
        return self._impl().available()

    def layers(self, limits, device):
        return self._impl().launcher_layers(limits, device)

    uses_cgroup = False  # the container is its own cgroup, with docker's memory and pids limits

    def spawn(self, sd, cfg, cgroup=None):
        return self._impl().spawn(sd, cfg)

    def kill(self, proc, sd):
        self._impl().kill(proc, sd)
        super().kill(proc, sd)


BACKENDS = {"process": ProcessBackend, "bwrap": BwrapBackend, "docker": DockerBackend, "none": InProcessBackend}
BACKEND_NAMES = tuple(BACKENDS)
