"""The sandboxed child: apply isolation layers, then load the model, then serve encode requests.

Started by a backend as ``python -I -S -B -c BOOTSTRAP`` from a private copy of this package. The
first frame on stdin is the configuration; nothing from the submission is read before every
layer has been applied (the model runtimes are imported only after that, too).
"""

from __future__ import annotations

import os
import sys
import traceback


def apply_layers(cfg: dict) -> tuple[list[str], list[str]]:
    """Apply the layers the config asks for, in the order that makes each one possible.

    Returns (applied layer names, one line per layer saying what happened).
    """
    if cfg.get("in_process"):  # backend "none": this is the caller's own process; touch nothing
        return [], ["none: the model runs in this process; no isolation layer, no limits"]
    from harness.sandbox import layers as L

    L.preload_seccomp()  # find and load libseccomp while the whole filesystem is still visible
    applied, report = [], []

    def record(name, result):
        ok, why = result
        if ok:
            applied.append(name)
        report.append(f"{name}: {'ok' if ok else 'NOT applied'}: {why}")
        return ok

    want = cfg["layers"]
    namespaces = False
    if want.get("namespaces"):
        namespaces = record("namespaces:net,ipc,mount", L.unshare_namespaces())
    uid = want.get("uid")
    if uid is not None and os.geteuid() == 0:
        if namespaces:
            ok, why = L.expose_to_other_users(cfg["expose_paths"], cfg["stage_dir"])
            if not ok:
                report.append(f"uid: NOT applied: could not expose the interpreter to uid {uid}: {why}")
                uid = None
            elif why != "nothing to expose":
                report.append(f"mount: {why}")
        elif any(L._blocking_ancestor(p) for p in cfg["expose_paths"]):
            report.append(f"uid: NOT applied: the interpreter is not readable by uid {uid} and there is "
                          "no mount namespace to expose it in")
            uid = None
    if namespaces and cfg.get("scratch_mb"):
        record(f"scratch_quota:{cfg['scratch_mb']}m", L.scratch_tmpfs(cfg["write_paths"][0], cfg["scratch_mb"], uid))
    if namespaces:
        record("private_tmp", L.cover_shared_dirs(cfg.get("keep_paths", [])))
        os.chdir(cfg["write_paths"][0])  # the working folder was the one under the new mounts
    elif not cfg.get("external_layers"):
        # the backend made no mounts of its own either: say what is missing and why
        for name in ("scratch_quota", "private_tmp"):
            report.append(f"{name}: NOT applied: needs the mount namespace")
    rl = dict(cfg["rlimits"])
    if uid is None:
        rl["max_processes"] = None  # RLIMIT_NPROC would count every process of our own uid
    if want.get("rlimits"):
        ok, why = L.set_rlimits(**rl)
        record("rlimits:" + why.split(" ")[0], (ok, why))
    if uid is not None:
        record(f"uid:{uid}", L.drop_to_uid(uid))
    # after the uid switch: a credential change clears the parent-death signal
    record("die_with_parent", L.die_with_parent())
    if os.getppid() != _START_PPID:
        os._exit(1)  # the parent died before the signal was armed
    record("not_dumpable", L.not_dumpable())
    if want.get("no_new_privs", True):
        record("no_new_privs", L.no_new_privs())
    if want.get("landlock"):
        features, why = L.landlock(cfg["read_paths"], cfg["write_paths"], devices=cfg.get("devices", []))
        if features:
            applied.extend(f"landlock:{f}" for f in features)
        report.append(f"landlock: {'ok' if features else 'NOT applied'}: {why}")
    if want.get("seccomp"):
        if record("seccomp", L.seccomp_filter()):
            applied.extend(["seccomp:no_socket", "seccomp:no_fork"])
    for extra in cfg.get("external_layers", []):
        applied.append(extra)
        report.append(f"{extra}: ok: applied by the backend")
    applied.append("clean_env")
    applied.append(f"threads:{cfg['threads']}")
    return applied, report


def _failure_header(kind, message, detail=None) -> dict:
    return {"ok": False, "kind": kind, "message": message, "detail": detail}


def model_traceback(exc: BaseException, limit: int = 4000) -> str:
    """The traceback of an exception the model raised, without the harness's own frames: they
    say nothing to the participant and show our internals to whoever reads the detail."""
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the private lib/harness
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(ours + os.sep)]
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(exc), exc))
    return ("Traceback (the model's frames):\n" + text)[-limit:]


def serve(cfg: dict, chan_in: int, chan_out: int) -> None:
    from harness.sandbox import protocol

    try:
        applied, report = apply_layers(cfg)
    except Exception as exc:
        protocol.send(chan_out, _failure_header("infra_error", f"sandbox setup failed: {exc}",
                                                traceback.format_exc()))
        return
    if cfg.get("probe"):
        from harness.sandbox.probe import run_probes

        protocol.send(chan_out, {"ok": True, "layers": applied, "report": report,
                                 "checks": run_probes(cfg)})
        try:  # stay alive until the parent has looked at us (cgroup membership), then go
            protocol.recv(chan_in)
        except protocol.ChannelClosed:
            pass
        return

    from harness.errors import SubmissionFailure
    from harness.sandbox import loaders

    try:  # before any byte of the model is read: a runtime this environment lacks is ours
        loaders.import_runtime(cfg["format"])
    except SubmissionFailure as exc:
        protocol.send(chan_out, _failure_header(exc.kind, exc.message, exc.detail))
        return
    # Sandboxed from here on: anything that fails now is the submission's doing.
    protocol.send(chan_out, {"ok": True, "stage": "sandboxed", "layers": applied, "report": report})

    try:
        forward, info = loaders.load_model(fmt=cfg["format"], path=cfg["model_path"], root=cfg["model_root"],
                                           threads=cfg["threads"], device=cfg["device"],
                                           num_outputs=cfg["num_outputs"],
                                           input_shape=tuple(cfg["input_shape"]),
                                           layout=cfg.get("input_layout", "NCHW"))
    except SubmissionFailure as exc:
        protocol.send(chan_out, _failure_header(exc.kind, exc.message, exc.detail))
        return
    except BaseException as exc:  # the model's own code may raise anything while loading
        kind = "memory_exceeded" if loaders.is_memory_error(exc) else "load_error"
        protocol.send(chan_out, _failure_header(kind, f"loading the model raised {loaders.one_line(exc)}",
                                                model_traceback(exc)))
        return
    protocol.send(chan_out, {"ok": True, "stage": "loaded", "info": info})

    import numpy as np

    channels = cfg["input_shape"][0]
    layout = cfg.get("input_layout", "NCHW")
    declared = loaders.check_range(cfg.get("input_range", [0, 1]), channels)
    while True:
        try:
            header, payload = protocol.recv(chan_in)
        except protocol.ChannelClosed:
            return
        if header.get("op") != "encode":
            return
        # "range": the parent's own probe of another convention (harness validate), never the model's
        input_range = declared if header.get("range") is None else loaders.check_range(header["range"], channels)
        try:
            images = np.frombuffer(payload, dtype=np.dtype(header["dtype"])).reshape(header["shape"])
            outputs = forward(loaders.prepare_batch(images, channels=channels, layout=layout,
                                                    input_range=input_range))
        except SubmissionFailure as exc:
            protocol.send(chan_out, _failure_header(exc.kind, exc.message, exc.detail))
            return
        except BaseException as exc:
            kind = "memory_exceeded" if loaders.is_memory_error(exc) else "runtime_error"
            # The message names only the exception type: its text was written by the model while it held
            # held-out images, so it may carry them; it goes to the detail (the participant's own results
            # and the organizer's detail view), never to a board or a status line.
            name = type(exc).__name__  # a class name the model's code may have made up: bounded
            name = name if name.isidentifier() and len(name) <= 32 else "an exception"
            protocol.send(chan_out, _failure_header(kind, f"the model's forward raised {name} "
                                                    "(its message is in the failure detail)", model_traceback(exc)))
            return
        metas, blobs = [], []
        for out in outputs:
            expected = (images.shape[0], cfg.get("latent_dim"))
            if out.dtype != np.float32 or tuple(out.shape) != expected:  # described, not sent: the parent
                # takes only float32 (n, latent_dim) and refuses a larger payload unread
                metas.append({"shape": [int(d) for d in out.shape], "dtype": str(out.dtype), "bytes": 0})
                continue
            blob = np.ascontiguousarray(out)
            metas.append({"shape": list(blob.shape), "dtype": blob.dtype.str, "bytes": blob.nbytes})
            blobs.append(blob.tobytes())
        protocol.send(chan_out, {"ok": True, "outputs": metas}, b"".join(blobs))


_START_PPID = os.getppid()


def main() -> None:
    # The protocol owns the original stdin/stdout; the model's prints go to stderr.
    chan_in, chan_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from harness.sandbox import protocol

    header, _ = protocol.recv(chan_in)
    serve(header["config"], chan_in, chan_out)
    sys.stderr.flush()
    os._exit(0)


# Run with ``python -I -S -B``: no site hooks (an editable install's finder would import the
# repository's copy of harness), an explicit sys.path instead: the private lib first.
BOOTSTRAP = ("import sys; sys.path[:] = {path!r}; "
             "from harness.sandbox.launcher import main; main()")
