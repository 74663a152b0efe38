"""A memory + pids cgroup per sandbox session: the bound on the child's whole process tree.

RLIMIT_AS is per process, so a model that forks (or a runtime that spawns helpers) could hold a
multiple of the memory limit; a cgroup counts every process in it, tmpfs pages it writes included.
Both cgroup v1 (one hierarchy per controller, as on these machines) and v2 (one unified tree with
delegated controllers) are supported, feature-detected: :func:`create` returns ``None`` and says why
when neither works (not root, controllers not delegated, read-only cgroupfs).

The session cgroup is a child of the grader's own cgroup, so any limit the grader runs under still
holds. The child joins it before its interpreter starts (see :func:`join_command`), so nothing
escapes it by forking early. Folders are named ``harness-<grader pid>-<n>``: :func:`sweep_stale`
removes those of graders that died without cleaning up.
"""

from __future__ import annotations

import itertools
import os
import signal
import time

from harness.submission.core import stale_entries

_counter = itertools.count()
PREFIX = "harness-"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup/cgroup2 mount."""
    found = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                    found.append((fields[4], rfields[0], set(rfields[2].split(","))))
    except OSError:
        pass
    return found


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    paths[c] = path
    except OSError:
        pass
    return paths


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _v1_dir(controller: str, mounts, own) -> str | None:
    for point, fstype, opts in mounts:
        if fstype == "cgroup" and controller in opts:
            return os.path.join(point, own.get(controller, "/").lstrip("/"))
    return None


class SessionCgroup:
    """The cgroup(s) of one session: ``dirs`` maps controller -> folder (one folder for v2)."""

    def __init__(self, version: int, dirs: dict[str, str], controllers: list[str]):
        self.version = version
        self.dirs = dirs
        self.controllers = controllers

    @property
    def procs_files(self) -> list[str]:
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    @property
    def layers(self) -> list[str]:
        return [f"cgroup:{c}" for c in self.controllers]

    def report(self, memory_mb, max_processes) -> list[str]:
        """One line per controller, for the session's layer report."""
        limit = {"memory": f"{memory_mb} MB", "pids": f"{max_processes} processes"}
        return [f"cgroup:{c}: ok: {limit[c]} for the whole process tree (cgroup v{self.version}, {self.dirs[c]})"
                for c in self.controllers]

    def contains(self, pid: int) -> bool:
        return all(str(pid) in _read(f).split() for f in self.procs_files)

    def pids(self) -> set[int]:
        return {int(p) for f in self.procs_files for p in _read(f).split() if p.isdigit()}

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this cgroup for going over its memory limit."""
        d = self.dirs.get("memory")
        if d is None:
            return False
        text = _read(os.path.join(d, "memory.events" if self.version == 2 else "memory.oom_control"))
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
        if self.version == 1:  # kernels without the oom_kill counter: the limit was hit
            return _read(os.path.join(d, "memory.failcnt")).strip() not in ("", "0")
        return False

    def peak_bytes(self) -> int | None:
        d = self.dirs.get("memory")
        if d is None:
            return None
        text = _read(os.path.join(d, "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")).strip()
        return int(text) if text.isdigit() else None

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup (``cgroup.kill`` where v2 has it)."""
        if self.version == 2:
            try:
                _write(os.path.join(next(iter(self.dirs.values())), "cgroup.kill"), "1")
            except OSError:
                pass  # kernels before 5.14 have no cgroup.kill: signal each process below
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for d in sorted(set(self.dirs.values()), key=len, reverse=True):
            for _ in range(50):  # rmdir fails while the last killed process is being reaped
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _limits(version: int, controller: str, d: str, *, memory_mb, max_processes) -> None:
    if controller == "memory" and memory_mb:
        limit = str(int(memory_mb) * 1024 * 1024)
        if version == 1:
            _write(os.path.join(d, "memory.limit_in_bytes"), limit)
            swap = os.path.join(d, "memory.memsw.limit_in_bytes")
            if os.path.exists(swap):  # memory + swap: no escape into swap
                try:
                    _write(swap, limit)
                except OSError:
                    pass
        else:
            _write(os.path.join(d, "memory.max"), limit)
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0")
    if controller == "pids" and max_processes:
        _write(os.path.join(d, "pids.max"), str(int(max_processes)))


def create(*, memory_mb: int | None, max_processes: int | None) -> tuple[SessionCgroup | None, str]:
    """A new session cgroup with the given limits, or (None, why not)."""
    if not os.path.isdir("/sys/fs/cgroup"):
        return None, "no cgroup filesystem at /sys/fs/cgroup"
    sweep_stale()
    mounts, own = _mounts(), _own_paths()
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    wanted = [c for c, on in (("memory", memory_mb), ("pids", max_processes)) if on]
    if not wanted:
        return None, "no memory or process limit asked for"
    problems = []
    # v1: one hierarchy per controller
    dirs = {}
    for controller in wanted:
        parent = _v1_dir(controller, mounts, own)
        if parent is None:
            continue
        d = os.path.join(parent, name)
        try:
            os.mkdir(d)
            dirs[controller] = d
            _limits(1, controller, d, memory_mb=memory_mb, max_processes=max_processes)
        except OSError as exc:
            problems.append(f"v1 {controller}: {exc.strerror or exc}")
            dirs.pop(controller, None)
            try:
                os.rmdir(d)
            except OSError:
                pass
    if dirs:
        return SessionCgroup(1, dirs, sorted(dirs)), ""
    # v2: a child of our own cgroup, where the controllers are delegated to our subtree
    for point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        parent = os.path.join(point, own.get("", "/").lstrip("/"))
        enabled = _read(os.path.join(parent, "cgroup.subtree_control")).split()
        if not all(c in enabled for c in wanted):
            try:
                _write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in wanted))
            except OSError as exc:
                available = _read(os.path.join(parent, "cgroup.controllers")).split()
                problems.append(f"v2 at {parent}: controllers {' '.join(wanted)} not delegated "
                                f"(available: {' '.join(available) or 'none'}; {exc.strerror or exc})")
                continue
        d = os.path.join(parent, name)
        try:
            os.mkdir(d)
            for controller in wanted:
                _limits(2, controller, d, memory_mb=memory_mb, max_processes=max_processes)
        except OSError as exc:
            problems.append(f"v2 at {parent}: {exc.strerror or exc}")
            try:
                os.rmdir(d)
            except OSError:
                pass
            continue
        return SessionCgroup(2, {c: d for c in wanted}, wanted), ""
    return None, "; ".join(problems) or "no cgroup v1 memory/pids hierarchy and no cgroup v2 mount"


def join_command(cgroup: SessionCgroup | None, command: list[str]) -> list[str]:
    """``command`` run so that it is inside ``cgroup`` before it starts: a shell writes its own
    pid into every ``cgroup.procs`` and then execs it. A failed write leaves it outside; the
    session checks membership and records the layer only when it holds."""
    if cgroup is None:
        return command
    files = cgroup.procs_files
    script = " && ".join(f'echo 0 > "${i + 1}"' for i in range(len(files)))
    return ["/bin/sh", "-c", f'{{ {script}; }} 2>/dev/null; shift {len(files)}; exec "$@"', "sh", *files, *command]


def sweep_stale() -> None:
    """Remove session cgroups of grader processes that no longer exist."""
    mounts, own = _mounts(), _own_paths()
    parents = {_v1_dir(c, mounts, own) for c in ("memory", "pids")}
    parents |= {os.path.join(p, own.get("", "/").lstrip("/")) for p, t, _ in mounts if t == "cgroup2"}
    for parent in filter(None, parents):
        for entry in stale_entries(parent, PREFIX):
            SessionCgroup(1, {"x": os.path.join(parent, entry)}, []).remove()
