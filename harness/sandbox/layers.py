"""Isolation layers, applied by the launcher to its own process before any model runtime is imported.

Every function here acts on the *calling* process and returns ``(applied, reason)``; nothing is
assumed: each layer is feature-detected by trying it. The parent never calls these on itself
(``harness doctor`` probes them in a child).

Python 3.11 has no ``os.unshare`` and no Landlock binding, so both go through ctypes syscalls.
Constants are from the Linux UAPI headers (x86_64 / aarch64 syscall numbers for Landlock are the
same generic numbers 444-446).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import resource
import signal
import stat

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

SYS_landlock_create_ruleset = 444
SYS_landlock_add_rule = 445
SYS_landlock_restrict_self = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

# Landlock filesystem access rights, with the ABI version that introduced each.
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REMOVE_DIR, FS_REMOVE_FILE, FS_MAKE_CHAR, FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
FS_MAKE_REG, FS_MAKE_SOCK, FS_MAKE_FIFO, FS_MAKE_BLOCK, FS_MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _err(what: str) -> str:
    code = ctypes.get_errno()
    return f"{what}: {errno.errorcode.get(code, code)} ({os.strerror(code)})"


# --- process attributes ------------------------------------------------------------------------

def die_with_parent() -> tuple[bool, str]:
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False, _err("prctl(PR_SET_PDEATHSIG)")
    return True, "killed when the parent dies"


def no_new_privs() -> tuple[bool, str]:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False, _err("prctl(PR_SET_NO_NEW_PRIVS)")
    return True, "setuid binaries and file capabilities cannot raise privileges"


def not_dumpable() -> tuple[bool, str]:
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return False, _err("prctl(PR_SET_DUMPABLE)")
    return True, "no core dumps, no ptrace attach from the same uid"


# --- namespaces ---------------------------------------------------------------------------------

def unshare_namespaces() -> tuple[bool, str]:
    """New network (no interfaces but a down loopback), IPC and mount namespaces."""
    if _libc.unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS) != 0:
        return False, _err("unshare(NEWNET|NEWIPC|NEWNS)") + " (needs root or CAP_SYS_ADMIN)"
    if _libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False, _err("mount --make-rprivate /")
    return True, "network, IPC and mount namespaces"


def _mount(src, target, fstype, flags, data=None) -> None:
    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    if _libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {src} -> {target}: {os.strerror(ctypes.get_errno())}")


def _blocking_ancestor(path: str) -> str | None:
    """The highest ancestor of path that 'other' users cannot traverse (e.g. /root, mode 700)."""
    parts = os.path.realpath(path).split(os.sep)
    for i in range(2, len(parts)):  # strict ancestors: the path itself may be private to its owner
        ancestor = os.sep.join(parts[:i]) or os.sep
        try:
            mode = os.stat(ancestor).st_mode
        except OSError:
            return None
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return ancestor
    return None


def expose_to_other_users(paths: list[str], stage_dir: str) -> tuple[bool, str]:
    """Inside our private mount namespace, make ``paths`` reachable for an unprivileged uid.

    An interpreter under /root (mode 700) cannot be run by another uid. Rather than chmod the real
    folder, cover each blocking ancestor with an empty tmpfs (mode 755) and bind-mount only the
    needed paths back into it: everything else there (home folders, caches, credentials) vanishes.
    """
    by_ancestor: dict[str, list[str]] = {}
    for p in paths:
        anc = _blocking_ancestor(p)
        if anc:
            by_ancestor.setdefault(anc, []).append(os.path.realpath(p))
    if not by_ancestor:
        return True, "nothing to expose"
    try:
        n = 0
        for anc, needed in by_ancestor.items():
            needed = sorted(set(needed))
            needed = [p for p in needed if not any(p != q and p.startswith(q + os.sep) for q in needed)]
            staged = []
            for p in needed:
                st = os.path.join(stage_dir, str(n))
                n += 1
                os.makedirs(st, exist_ok=True)
                _mount(p, st, None, MS_BIND | MS_REC)
                staged.append((st, p))
            _mount("tmpfs", anc, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
            for st, p in staged:
                os.makedirs(p, mode=0o755, exist_ok=True)
                _mount(st, p, None, MS_MOVE)
        return True, "covered " + ", ".join(sorted(by_ancestor)) + " with a tmpfs holding only " + \
            ", ".join(sorted(p for v in by_ancestor.values() for p in v))
    except OSError as exc:
        return False, str(exc)


def scratch_tmpfs(path: str, size_mb: int, uid: int | None) -> tuple[bool, str]:
    """Make the scratch folder a size-limited tmpfs: the model's total writes are bounded, not just
    each file (RLIMIT_FSIZE). Its pages count against the session's memory cgroup too."""
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    try:
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={int(size_mb)}m,nr_inodes=4096,mode=0700{owner}")
    except OSError as exc:
        return False, str(exc)
    return True, f"{int(size_mb)} MB tmpfs"


COVERED_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")


def cover_shared_dirs(keep: list[str], dirs=COVERED_DIRS) -> tuple[bool, str]:
    """Put an empty read-only tmpfs over the machine's shared folders (``/tmp``, ``/run``,
    ``/dev/shm``...), where other programs keep unix sockets (``/run/docker.sock``) and files.

    Landlock does not cover ``connect()`` on pathname unix sockets; an empty folder has none.
    Paths the child needs that live below (``keep``: the sandbox folder itself sits in ``/tmp``)
    are opened first and bind-mounted back from their descriptors, so they survive the cover.
    """
    covered, skipped = [], []
    for d in dirs:
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # /var/run is a link to /run on Debian
            continue
        inside = sorted({os.path.realpath(p) for p in keep if os.path.realpath(p).startswith(d + os.sep)})
        if any(os.path.realpath(p) == d for p in keep):
            skipped.append(d)
            continue
        top = [p for p in inside if not any(p != q and p.startswith(q + os.sep) for q in inside)]
        fds = []
        try:
            for p in top:
                fds.append((p, os.open(p, os.O_PATH | os.O_CLOEXEC)))
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k,nr_inodes=1024")
            for p, fd in fds:
                os.makedirs(p, mode=0o755, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            _mount(None, d, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            covered.append(d)
        except OSError as exc:
            return False, f"{d}: {exc}"
        finally:
            for _, fd in fds:
                os.close(fd)
    why = "empty read-only " + ", ".join(covered) if covered else "nothing to cover"
    if skipped:
        why += f" (left visible: {', '.join(skipped)}: the interpreter lives there)"
    return bool(covered), why


# --- resource limits ----------------------------------------------------------------------------

def set_rlimits(*, memory_mb: int | None, cpu_seconds: float | None, file_size_mb: int | None,
                open_files: int | None, max_processes: int | None) -> tuple[bool, str]:
    applied = []
    plan = [("core", resource.RLIMIT_CORE, 0, 0)]
    if memory_mb:
        plan.append(("as", resource.RLIMIT_AS, memory_mb * 1024**2, memory_mb * 1024**2))
    else:  # no limit asked for (CUDA): drop a soft one inherited from the grader's job process
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        plan.append(("as_lifted", resource.RLIMIT_AS, hard, hard))
    if cpu_seconds:
        soft = max(1, int(cpu_seconds))
        # soft < hard: SIGXCPU at the soft limit tells a CPU-limit kill apart from any other SIGKILL
        plan.append(("cpu", resource.RLIMIT_CPU, soft, soft + 5))
    if file_size_mb:
        plan.append(("fsize", resource.RLIMIT_FSIZE, file_size_mb * 1024**2, file_size_mb * 1024**2))
    if open_files:
        plan.append(("nofile", resource.RLIMIT_NOFILE, open_files, open_files))
    if max_processes:
        plan.append(("nproc", resource.RLIMIT_NPROC, max_processes, max_processes))
    problems = []
    for name, res, soft, hard in plan:
        try:
            resource.setrlimit(res, (soft, hard))
            applied.append(name)
        except (ValueError, OSError) as exc:
            problems.append(f"{name}: {exc}")
    return bool(applied), ",".join(applied) + (f" (failed: {'; '.join(problems)})" if problems else "")


# --- user ---------------------------------------------------------------------------------------

def drop_to_uid(uid: int) -> tuple[bool, str]:
    """Become an unprivileged uid/gid (only possible when we are root); RLIMIT_NPROC bites after."""
    if os.geteuid() != 0:
        return False, f"running as uid {os.geteuid()} already (not root): cannot switch uid"
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    except OSError as exc:
        return False, f"setuid({uid}): {exc}"
    return True, f"uid/gid {uid}, no supplementary groups, no capabilities"


# --- Landlock -----------------------------------------------------------------------------------

def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is missing or disabled."""
    v = _libc.syscall(SYS_landlock_create_ruleset, None, ctypes.c_size_t(0),
                      ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(int(v), 0)


READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


def landlock(read_paths: list[str], write_paths: list[str], *, devices: list[str] = (),
             deny_tcp: bool = True, scope: bool = True) -> tuple[list[str], str]:
    """Restrict this process to reading ``read_paths``, writing ``write_paths``; deny TCP.

    Returns the list of applied Landlock features (``fs``, ``net``, ``scope``) and a reason.
    """
    abi = landlock_abi()
    if abi < 1:
        return [], "Landlock is not available (kernel < 5.13 or not in the LSM list)"
    handled_fs = _FS_BY_ABI.get(abi, _FS_BY_ABI[5])
    attr = _RulesetAttr(handled_fs, 0, 0)
    size = 8
    features = ["fs"]
    if abi >= 4 and deny_tcp:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
        features.append("net")
    if abi >= 6 and scope:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
        features.append("scope")
    ruleset = _libc.syscall(SYS_landlock_create_ruleset, ctypes.byref(attr), ctypes.c_size_t(size),
                            ctypes.c_uint32(0))
    if ruleset < 0:
        return [], _err("landlock_create_ruleset")
    skipped = []
    try:
        grants = [(p, READ_ONLY) for p in read_paths] + [(p, handled_fs) for p in write_paths]
        grants += [(d, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE | FS_IOCTL_DEV) for d in devices]
        for path, access in grants:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                skipped.append(path)
                continue
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _FILE_RIGHTS
                rule = _PathBeneathAttr(access & handled_fs, fd)
                if _libc.syscall(SYS_landlock_add_rule, ctypes.c_int(ruleset),
                                 ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                                 ctypes.c_uint32(0)) != 0:
                    return [], _err(f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        if _libc.syscall(SYS_landlock_restrict_self, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return [], _err("landlock_restrict_self") + " (needs no_new_privs first)"
    finally:
        os.close(ruleset)
    return features, f"Landlock ABI {abi}: {', '.join(features)}" + (
        f" (absent, skipped: {', '.join(skipped)})" if skipped else "")


# --- seccomp ------------------------------------------------------------------------------------

DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key", "swapon",
    "swapoff", "reboot", "acct", "quotactl", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
    "io_uring_setup", "personality", "syslog", "mount_setattr", "move_mount", "open_tree", "fsopen",
    "fsmount", "fspick",
    # a model must stay in the process group the parent kills on timeout
    "setsid", "setpgid",
)


def preload_seccomp() -> None:
    try:
        import pyseccomp  # noqa: F401  (locates libseccomp with ldconfig: do it before Landlock)
    except Exception:
        pass


CLONE_THREAD = 0x00010000


def seccomp_filter(*, deny_sockets: bool = True, deny_processes: bool = True) -> tuple[bool, str]:
    """Deny (EPERM) kernel attack surface, every new socket and every new process; allow the rest.

    Loaded last, after the result channel exists (it is the inherited stdin/stdout pipes, so no
    ``socket()`` is ever needed). ``clone`` stays allowed only with ``CLONE_THREAD`` (runtimes
    start compute threads); ``clone3`` takes its flags in memory seccomp cannot read, so it fails
    with ENOSYS and glibc falls back to ``clone``. ``fork``/``vfork``/``execve`` are denied: the
    launcher is already running, so nothing legitimate needs them.
    """
    try:
        import pyseccomp as seccomp
    except Exception as exc:  # pragma: no cover - depends on the machine
        return False, f"pyseccomp/libseccomp unavailable: {exc}"
    try:
        filt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        denied = []
        names = list(DENIED_SYSCALLS)
        if deny_sockets:
            # socketpair is a separate syscall; the channel pipes were made before the filter
            names += ["socket", "socketpair"]
        if deny_processes:
            names += ["fork", "vfork", "execve", "execveat"]
        for name in names:
            try:
                filt.add_rule(seccomp.ERRNO(errno.EPERM), name)
                denied.append(name)
            except Exception:
                pass  # syscall unknown on this architecture (aarch64 has no fork/vfork)
        if deny_processes:
            filt.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        # No new user namespaces through clone, even for threads
        filt.add_rule(seccomp.ERRNO(errno.EPERM), "clone",
                      seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        filt.load()
    except Exception as exc:
        return False, f"seccomp filter failed to load: {exc}"
    what = [f"{len(denied)} syscalls denied"]
    if deny_sockets:
        what.append("no sockets")
    if deny_processes:
        what.append("no new processes (threads only)")
    return True, ", ".join(what + ["no user namespaces"])
