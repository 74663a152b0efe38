"""The ``docker`` backend: the sandboxed child in its own container (one per encoder session, so one
per grading job).

:class:`harness.sandbox.backends.DockerBackend` delegates to ``available``, ``launcher_layers``,
``spawn`` and ``kill`` here. The container is created through the Docker SDK with

- no network (``network_mode="none"``), its own PID/IPC/UTS/mount namespaces;
- a read-only root filesystem, a small ``/tmp`` tmpfs, all capabilities dropped,
  ``no-new-privileges``, an unprivileged user;
- memory (no swap), pids and CPU limits from :class:`harness.sandbox.Limits`;
- the sandbox folder mounted at fixed paths: ``/sandbox/lib`` (the launcher, read-only),
  ``/sandbox/model`` (the submission, read-only), ``/sandbox/scratch`` (its only writable place).

The launcher then runs inside with the image's own interpreter and applies its own layers on top
(rlimits, Landlock and seccomp where the engine allows them). Its stdin/stdout carry the wire
protocol and stderr the model's log, through ``docker start --attach --interactive`` (the SDK's
attach socket multiplexes the streams; the CLI gives the plain pipes the session expects).

The image is ``$HARNESS_DOCKER_IMAGE`` (default ``harness-grader:latest``, built from the
repository's ``Dockerfile``); it needs Python with numpy and the model runtimes, at
``$HARNESS_DOCKER_PYTHON`` (default ``/usr/local/bin/python3``). Where no registry can be reached,
:func:`build_image_from_host` (``harness docker build``) makes one from this machine's own Python
environment, a venv included.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from harness.sandbox.loaders import RUNTIME_MODULES

DEFAULT_IMAGE = "harness-grader:latest"
DEFAULT_PYTHON = "/usr/local/bin/python3"
CONTAINER_ROOT = "/sandbox"
LABEL = "org.harness.sandbox"
READ_PATHS_LABEL = LABEL + ".read_paths"  # where the image keeps Python, when not under /usr

# The bootstrap uses the image's own interpreter paths: the grader's paths mean nothing inside.
_BOOTSTRAP = ("import sys, sysconfig; p = sysconfig.get_paths(); "
              "sys.path[:] = [{lib!r}] + list(dict.fromkeys(p[k] for k in ('stdlib', 'platstdlib', 'purelib', "
              "'platlib'))) + [p['stdlib'] + '/lib-dynload']; "
              "from harness.sandbox.launcher import main; main()")


def image_name() -> str:
    return os.environ.get("HARNESS_DOCKER_IMAGE") or DEFAULT_IMAGE


def python_path() -> str:
    return os.environ.get("HARNESS_DOCKER_PYTHON") or DEFAULT_PYTHON


def image_identity(name: str | None = None) -> dict:
    """``{"name", "id", "formats"}`` of the image (``id`` None when there is no engine or no such image;
    ``formats`` None when it was not built by :func:`build_image_from_host`)."""
    name = name or image_name()
    try:
        c = client(timeout=10)
        try:
            image = c.images.get(name)
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - no engine or no such image: the job reports it as infra_error
        return {"name": name, "id": None, "formats": None}
    formats = (image.labels or {}).get(FORMATS_LABEL)
    return {"name": name, "id": image.id, "formats": formats.split(",") if formats else None}


def client(timeout: int = 30):
    import docker

    return docker.from_env(timeout=timeout)


def available() -> tuple[bool, str]:
    """Whether a container can be started here: SDK installed, engine reachable, image present."""
    try:
        import docker
    except ImportError:
        return False, "the Docker SDK is not installed (pip install 'harness[docker]')"
    try:
        c = client(timeout=10)
        c.ping()
    except Exception as exc:  # noqa: BLE001 - any engine problem means "not available"
        return False, f"no Docker engine reachable ({type(exc).__name__}: {str(exc)[:150]})"
    try:
        c.images.get(image_name())
    except docker.errors.ImageNotFound:
        return False, (f"image {image_name()!r} not found: build it with `harness docker build` (offline, from this "
                       f"environment) or `docker build -t {DEFAULT_IMAGE} .` in the repository, or set "
                       "HARNESS_DOCKER_IMAGE")
    except Exception as exc:  # noqa: BLE001
        return False, f"cannot inspect image {image_name()!r}: {exc}"
    finally:
        c.close()
    if shutil.which("docker") is None:
        return False, "the docker command-line client is not installed (it carries the session's pipes)"
    return True, "ok"


def launcher_layers(limits, device: str) -> dict:
    """Layers the launcher applies itself inside the container.

    Namespaces come from Docker; ``uid`` is the unprivileged user Docker starts the child as (the
    session prepares the sandbox folder for it; the launcher need not switch).
    """
    from harness.sandbox.backends import sandbox_uid

    uid = sandbox_uid() if os.geteuid() == 0 else os.geteuid()
    return {"namespaces": False, "landlock": True, "seccomp": True, "rlimits": True, "uid": uid,
            "no_new_privs": True}


def _to_container(value, host_root: str):
    """Rewrite sandbox-folder paths (host) to their fixed container paths, recursively."""
    if isinstance(value, str):
        return CONTAINER_ROOT + value[len(host_root):] if value.startswith(host_root) else value
    if isinstance(value, list):
        return [_to_container(v, host_root) for v in value]
    if isinstance(value, dict):
        return {k: _to_container(v, host_root) for k, v in value.items()}
    return value


def container_options(*, image: str, command: list, mounts: dict, limits, uid: int | None, env: dict,
                      devices=(), scratch: tuple[str, int] | None = None) -> dict:
    """Keyword arguments of ``docker.containers.create`` for one sandboxed child.

    ``mounts``: host path -> (container path, "ro" | "rw"). ``scratch``: (container path, MB) of the
    child's size-limited tmpfs scratch folder.
    """
    memory = f"{int(limits.memory_mb)}m" if getattr(limits, "memory_mb", None) else None
    options = {
        "image": image,
        "command": command,
        "stdin_open": True,
        "network_mode": "none",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "pids_limit": int(getattr(limits, "max_processes", None) or 256),
        "nano_cpus": int(max(1, getattr(limits, "threads", 1)) * 1e9),
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=64m",
                  **({scratch[0]: f"rw,nosuid,nodev,size={int(scratch[1])}m,mode=1777"} if scratch else {})},
        "volumes": {host: {"bind": inside, "mode": mode} for host, (inside, mode) in mounts.items()},
        "environment": env,
        "working_dir": env.get("HOME", "/"),
        "labels": {LABEL: "1"},
        "ipc_mode": "none",
        "devices": [f"{d}:{d}:rw" for d in devices],
    }
    if memory:
        options["mem_limit"] = memory
        options["memswap_limit"] = memory  # no swap: memory beyond the limit is an OOM kill
    if uid is not None:
        options["user"] = f"{uid}:{uid}"
    return options


class ContainerProcess(subprocess.Popen):
    """``docker start -ai`` for one container: its pipes are the child's; exit codes 128+n read as
    signal n, as a plain child's would (137: SIGKILL, e.g. the OOM killer)."""

    container_id: str = ""

    def _map(self):
        if self.returncode is not None and self.returncode > 128:
            self.returncode = -(self.returncode - 128)
        return self.returncode

    def poll(self):
        super().poll()
        return self._map()

    def wait(self, timeout=None):
        super().wait(timeout)
        return self._map()


def spawn(sd, cfg: dict) -> subprocess.Popen:
    """Create the container (SDK), then attach its stdio and start it (CLI)."""
    from harness.sandbox.backends import clean_env

    inner = {k: CONTAINER_ROOT + "/" + k for k in ("lib", "model", "scratch", "stage")}
    uid = cfg["layers"].get("uid")
    cfg["layers"]["uid"] = None  # docker starts it as that user already
    cfg["rlimits"]["max_processes"] = None  # the pids limit does it, per container
    host_root = sd.root
    for key, value in list(cfg.items()):
        if key != "layers":
            cfg[key] = _to_container(value, host_root)
    # the grader's interpreter paths mean nothing inside; the image names its own when outside /usr
    cfg["read_paths"] = [p for p in cfg["read_paths"] if not p.startswith((sys.prefix, sys.base_prefix))]
    cfg["expose_paths"] = []
    cfg["devices"] = [d for d in cfg["devices"] if d == "/dev/null"]
    limits = _Limits(cfg)
    scratch_mb = cfg.pop("scratch_mb", None)  # docker makes the tmpfs; the launcher has no mount namespace
    env = _to_container(clean_env(sd, cfg["threads"]), host_root)
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    c = client()
    try:
        labels = c.images.get(image_name()).labels or {}
        cfg["read_paths"] += [p for p in labels.get(READ_PATHS_LABEL, "").split(":") if p]
        sys_path = [p for p in labels[SYS_PATH_LABEL].split(":") if p] if SYS_PATH_LABEL in labels else None
        options = container_options(
            image=image_name(), command=[python_path(), "-I", "-S", "-B", "-c", bootstrap(inner["lib"], sys_path)],
            mounts={sd.lib: (inner["lib"], "ro"), sd.model: (inner["model"], "ro"),
                    **({} if scratch_mb else {sd.scratch: (inner["scratch"], "rw")})},
            limits=limits, uid=uid, env=env, scratch=(inner["scratch"], scratch_mb) if scratch_mb else None,
        )
        container = c.containers.create(**options)
    except Exception as exc:  # noqa: BLE001 - surfaced by the session as infra_error
        raise OSError(f"docker could not create the container: {exc}") from None
    finally:
        c.close()
    cfg["external_layers"] = [
        f"docker:net=none,pid,ipc,uts,mount,read_only,cap_drop=ALL,no_new_privileges,user={uid},"
        f"memory={options.get('mem_limit')},pids={options['pids_limit']},cpus={options['nano_cpus'] / 1e9:g}"]
    if scratch_mb:
        cfg["external_layers"].append(f"scratch_quota:{int(scratch_mb)}m")
    proc = ContainerProcess(["docker", "start", "--attach", "--interactive", container.id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, close_fds=True, bufsize=0)
    proc.container_id = container.id
    return proc


class _Limits:
    """The limits docker enforces, read back from the launcher configuration."""

    def __init__(self, cfg):
        rl = cfg["rlimits"]
        self.memory_mb = rl.get("memory_mb")
        self.max_processes = 256
        self.threads = cfg["threads"]


def kill(proc, sd) -> None:
    """Kill and remove the container (the caller also kills the attached client's process group)."""
    cid = getattr(proc, "container_id", None)
    if not cid:
        return
    try:
        c = client()
        try:
            c.containers.get(cid).remove(force=True)
        finally:
            c.close()
    except Exception:  # noqa: BLE001 - already gone
        pass


def oom_killed(container_id: str) -> bool:
    c = client()
    try:
        return bool(c.containers.get(container_id).attrs["State"].get("OOMKilled"))
    except Exception:  # noqa: BLE001
        return False
    finally:
        c.close()


# ---- images without a registry ----------------------------------------------------------------

# The image holds each runtime distribution's whole install (its RECORD) and that of everything it
# requires, so lazy imports (torch's sympy, onnxruntime's flatbuffers) find their packages too.
BASE_DISTRIBUTIONS = ("numpy", "onnx", "onnxruntime", "pyseccomp")
TORCH_DISTRIBUTIONS = ("torch",)
FORMATS_LABEL = LABEL + ".formats"  # the formats an image was built (and checked) to run
SYS_PATH_LABEL = LABEL + ".sys_path"  # the site folders of the environment it was built from

# Run by the interpreter whose environment becomes the image (a venv's too): where its stdlib,
# executable and site folders are, and every top-level entry the distributions' RECORDs name.
_ENVIRONMENT_PROBE = r"""
import importlib, importlib.metadata as md, json, os, re, sys, sysconfig
roots, modules = json.loads(sys.argv[1])
for m in modules:
    importlib.import_module(m)
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
dists = {}
for d in md.distributions():
    dists.setdefault(norm(d.metadata["Name"] or ""), d)
missing = [r for r in roots if norm(r) not in dists]
todo, seen = [norm(r) for r in roots], set()
while todo:
    name = todo.pop()
    if name in seen or name not in dists:
        continue
    seen.add(name)
    for req in dists[name].requires or []:
        if "extra ==" not in req:
            todo.append(norm(re.match(r"[A-Za-z0-9_.-]+", req).group(0)))
entries = set()
for name in seen:
    d = dists[name]
    base = os.path.realpath(d.locate_file(""))
    for f in d.files or []:
        if f.parts and f.parts[0] != "..":
            top = os.path.join(base, f.parts[0])
            if os.path.exists(top):
                entries.add(top)
stdlib = os.path.dirname(os.__file__)
for m in list(sys.modules.values()):
    f = os.path.realpath(getattr(m, "__file__", None) or "")
    for s in sys.path:
        s = os.path.realpath(s) if s else ""
        if s and os.path.isdir(s) and s != os.path.realpath(stdlib) and f.startswith(s + os.sep):
            entries.add(os.path.join(s, f[len(s) + 1:].split(os.sep)[0]))
sites = [os.path.realpath(s) for s in sys.path if s and os.path.isdir(s)]
sites = [s for s in dict.fromkeys(sites) if any(e.startswith(s + os.sep) for e in entries)]
print(json.dumps({"exe": os.path.realpath(sys.executable), "prefix": os.path.realpath(sys.base_prefix),
                  "stdlib": stdlib, "dynload": os.path.join(sysconfig.get_paths()["platstdlib"], "lib-dynload"),
                  "libdir": sysconfig.get_config_var("LIBDIR") or "", "sites": sites,
                  "entries": sorted(entries), "missing": missing,
                  "distributions": sorted(seen)}))
"""


def environment(python: str = sys.executable, *, with_torch: bool = False) -> dict:
    """What an image of ``python``'s environment holds: its stdlib, interpreter and the installs of
    the runtime distributions (and their requirements). Raises ``OSError`` when one is missing."""
    roots = list(BASE_DISTRIBUTIONS) + (list(TORCH_DISTRIBUTIONS) if with_torch else [])
    formats = ["onnx"] + (["torchscript", "torch_export"] if with_torch else [])
    modules = sorted({m for f in formats for m in RUNTIME_MODULES[f]} | {"pyseccomp"})
    out = subprocess.run([python, "-c", _ENVIRONMENT_PROBE, json.dumps([roots, modules])], capture_output=True,
                         text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise OSError(f"{python} cannot import the runtimes the image needs ({', '.join(modules)}): {last}")
    env = json.loads(out.stdout)
    if env["missing"]:
        raise OSError(f"{python}'s environment has no installed distribution {', '.join(env['missing'])}")
    hidden = [p for p in [env["exe"], env["stdlib"], *env["sites"]] if p == "/tmp" or p.startswith("/tmp/")]
    if hidden:
        raise OSError(f"{hidden[0]} is under /tmp, which every job container gets a fresh tmpfs over: "
                      "install the environment elsewhere (e.g. python -m venv /opt/harness-venv)")
    env["formats"] = formats
    env["modules"] = modules
    return env


def _shared_libraries(paths) -> set[str]:
    """Every shared library the ELF files under ``paths`` load (ldd closure), plus the loader."""
    libs = set()
    elves = []
    for p in paths:
        if os.path.isfile(p):
            elves.append(p)
            continue
        for dirpath, _, names in os.walk(p):
            elves += [os.path.join(dirpath, n) for n in names if ".so" in n]
    for elf in elves:
        out = subprocess.run(["ldd", elf], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            parts = line.split("=>")
            target = (parts[1] if len(parts) == 2 else parts[0]).strip().split(" (")[0].strip()
            if target.startswith("/") and os.path.exists(target):
                # the name the loader asks for, in its merged-/usr folder, and the file it points to
                libs.add(os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target)))
                libs.add(os.path.realpath(target))
    return libs


def _ldconfig_paths(soname: str) -> set[str]:
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    paths = set()
    for line in out.splitlines():
        if line.strip().startswith(soname) and "=>" in line:
            target = line.split("=>")[1].strip()
            paths.add(os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target)))
            paths.add(os.path.realpath(target))
    return paths


def bootstrap(lib: str, sys_path: list[str] | None) -> str:
    """The child's ``-c`` program: the private lib first, then the image's stdlib, then the site folders
    the image was built with (its label) or, for an image built otherwise, its interpreter's own."""
    if sys_path is None:
        return _BOOTSTRAP.format(lib=lib)
    return ("import sys, sysconfig; p = sysconfig.get_paths(); "
            f"sys.path[:] = [{lib!r}, p['stdlib'], p['platstdlib'] + '/lib-dynload'] + {list(sys_path)!r}; "
            "from harness.sandbox.launcher import main; main()")


def build_image_from_host(tag: str = DEFAULT_IMAGE, *, python: str = sys.executable, with_torch: bool = False,
                          extra_paths=(), check: bool = True) -> dict:
    """Build an image from ``python``'s environment (its interpreter and stdlib, the installs of the
    runtime distributions and their requirements, the shared libraries they load) with
    ``docker import``: no registry, no network. A venv works: its site folders are recorded in the
    image's label and put on the child's path. Returns ``{"id", "tag", "formats", "size_mb", ...}``.

    The interpreter is linked at ``/usr/local/bin/python3`` (the backend's default). Every file is
    made world-readable so that the unprivileged container user can run it. With ``check``, the
    image's interpreter must import every runtime, as the unprivileged user, before this returns.
    """
    env = environment(python, with_torch=with_torch)
    stdlib, exe, packages = env["stdlib"], env["exe"], env["entries"]
    members = [exe, stdlib] + packages + list(extra_paths)
    if os.path.isdir(env["libdir"]):
        members += [os.path.join(env["libdir"], n) for n in os.listdir(env["libdir"])
                    if n.startswith("libpython") and (n.endswith(".so") or ".so." in n)]
    members += sorted(_shared_libraries([exe, env["dynload"]] + packages))
    # ctypes finds libseccomp through `ldconfig -p` (the launcher's seccomp layer)
    seccomp = ctypes.util.find_library("seccomp")
    if seccomp:
        members += sorted(_ldconfig_paths(seccomp))
    members += [p for p in ("/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/lib64", "/bin", "/lib", "/sbin",
                            os.path.realpath("/sbin/ldconfig")) if os.path.lexists(p)]
    site_dir = os.path.join(stdlib, "site-packages")
    entries: dict[str, str | None] = {}  # path in the image -> host path (None: a plain folder)
    for m in members:
        if os.path.isdir(m) and not os.path.islink(m):
            for dirpath, dirnames, names in os.walk(m):
                if m == stdlib and (dirpath == site_dir or dirpath.startswith(site_dir + os.sep)):
                    dirnames[:] = []
                    continue
                dirnames[:] = [d for d in dirnames if d != "__pycache__"]
                entries[dirpath] = dirpath
                for n in dirnames + names:
                    full = os.path.join(dirpath, n)
                    if not os.path.isdir(full) or os.path.islink(full):
                        entries[full] = full
        else:
            entries[m] = m
    for path in list(entries):  # every parent folder, world-traversable (/root in a pyenv install)
        parent = os.path.dirname(path)
        while parent not in ("/", "") and parent not in entries:
            entries[parent] = None
            parent = os.path.dirname(parent)
    for d in ("/usr/local/bin", "/tmp", "/sandbox/lib", "/sandbox/model", "/sandbox/scratch", "/sandbox/stage"):
        entries.setdefault(d, None)
    with tempfile.TemporaryDirectory(prefix="harness-image-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(tar_path, "w") as tar:
            for path in sorted(entries):
                host = entries[path]
                if host is None:
                    info = tarfile.TarInfo(path.lstrip("/"))
                    # docker copies a tmpfs mount point's mode from the image: scratch must be 1777
                    info.type, info.mode = tarfile.DIRTYPE, 0o1777 if path in ("/tmp", "/sandbox/scratch") else 0o755
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(host, arcname=path.lstrip("/"))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode |= 0o555 if info.isdir() or info.mode & 0o111 else 0o444
                if info.isreg():
                    with open(host, "rb") as fh:
                        tar.addfile(info, fh)
                elif info.isdir() or info.issym():
                    tar.addfile(info)
            link = tarfile.TarInfo("usr/local/bin/python3")
            link.type, link.linkname = tarfile.SYMTYPE, exe
            tar.addfile(link)
        size_mb = os.path.getsize(tar_path) / 2**20
        out = subprocess.run(["docker", "import", "--change", "ENV PATH=/usr/local/bin:/usr/bin:/bin",
                              "--change", f"LABEL {LABEL}.image=host-python",
                              "--change", f"LABEL {READ_PATHS_LABEL}={':'.join([env['prefix'], *env['sites']])}",
                              "--change", f"LABEL {SYS_PATH_LABEL}={':'.join(env['sites'])}",
                              "--change", f"LABEL {FORMATS_LABEL}={','.join(env['formats'])}",
                              tar_path, tag], capture_output=True, text=True)
        if out.returncode != 0:
            raise OSError(f"docker import failed: {out.stderr.strip()[:300]}")
    image = {"id": out.stdout.strip(), "tag": tag, "formats": env["formats"], "size_mb": round(size_mb),
             "python": python, "sites": env["sites"], "distributions": env["distributions"]}
    if check:
        check_image(tag, env["modules"])
    return image


def check_image(tag: str, modules) -> str:
    """Import ``modules`` with the image's interpreter as the unprivileged user, no network, on the
    path the backend gives the child. Returns their versions; raises ``OSError`` naming what failed."""
    c = client(timeout=120)
    try:
        labels = c.images.get(tag).labels or {}
        sys_path = [p for p in labels.get(SYS_PATH_LABEL, "").split(":") if p] if SYS_PATH_LABEL in labels else None
        program = bootstrap("/nonexistent", sys_path).split("from harness")[0] + (
            f"import importlib; print(' '.join(m + '=' + str(getattr(importlib.import_module(m), '__version__', '?')) "
            f"for m in {list(modules)!r}))")
        try:
            out = c.containers.run(tag, [python_path(), "-I", "-S", "-B", "-c", program], remove=True,
                                   network_mode="none", user="65534:65534", stderr=True)
        except Exception as exc:  # noqa: BLE001 - ContainerError carries the interpreter's stderr
            text = getattr(exc, "stderr", None) or str(exc).encode()
            last = (text.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
            raise OSError(f"image {tag!r} cannot import its runtimes: {last[:300]}") from None
        return out.decode().strip()
    finally:
        c.close()
