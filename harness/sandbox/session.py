"""EncoderSession: the parent side. Starts the child, streams batches, checks every output."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import math
import os
import threading
import time
import warnings

import numpy as np

from harness.errors import FAILURE_KINDS, InputError, SubmissionFailure
from harness.sandbox import cgroups, protocol
from harness.sandbox.backends import (BACKEND_NAMES, BACKENDS, gpu_devices, launcher_config, prepare_sandbox_dir,
                                      release_uid)
from harness.sandbox.exits import LOADING_STAGES, ExitFacts, classify_exit
from harness.sandbox.limits import Limits

UNSANDBOXED_NOTE = ("UNSANDBOXED: backend 'none' runs the model inside this process with every right "
                    "this process has; use it only for models you trust")
DEVICES = ("cpu", "cuda", "auto")
PIPE_BYTES = 1 << 20  # the kernel's default pipe-max-size


class _LogTail:
    """Drains the child's stderr in a thread, keeping only the last ``keep`` bytes."""

    def __init__(self, stream, keep: int = 64 * 1024):
        self.chunks: collections.deque = collections.deque()
        self.size = 0
        self.total = 0
        self.keep = keep
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        fd = stream.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self.total += len(chunk)
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.chunks[0]) >= self.keep:
                    self.size -= len(self.chunks.popleft())

    def text(self) -> str:
        with self.lock:
            data = b"".join(self.chunks)[-self.keep:]
            dropped = self.total - len(data)
        head = f"[... {dropped} earlier bytes of output dropped]\n" if dropped > 0 else ""
        return head + data.decode("utf-8", "replace")


@dataclasses.dataclass(frozen=True)
class _Described:
    """An output the child described but did not send: only float32 codes travel."""

    shape: tuple
    dtype: str


def check_outputs(outputs: list, *, n: int, latent_dim: int, names: list[str]) -> list[np.ndarray]:
    """The model's outputs, checked: float32 (n, latent_dim), finite. Else ``bad_output``."""
    if len(outputs) < len(names):
        raise SubmissionFailure("bad_output", f"the model returned {len(outputs)} output(s); submission.json "
                                f"declares {len(names)} ({', '.join(names)})")
    checked = []
    for name, out in zip(names, outputs):
        if isinstance(out, _Described) or out is None or out.dtype.kind not in "fiub":
            shape = getattr(out, "shape", None)
            if shape is not None and tuple(shape) != (n, latent_dim):
                raise SubmissionFailure("bad_output", f"output {name!r} has shape {tuple(shape)} for a batch of "
                                        f"{n}; expected ({n}, {latent_dim}) (batch, latent_dim from submission.json)")
            raise SubmissionFailure("bad_output", f"output {name!r} has dtype {getattr(out, 'dtype', None)}; it "
                                    "must be float32 (cast in the model before exporting)")
        if tuple(out.shape) != (n, latent_dim):
            raise SubmissionFailure("bad_output", f"output {name!r} has shape {tuple(out.shape)} for a batch of "
                                    f"{n}; expected ({n}, {latent_dim}) (batch, latent_dim from submission.json)")
        if out.dtype != np.float32:
            raise SubmissionFailure("bad_output", f"output {name!r} has dtype {out.dtype}; it must be float32 "
                                    "(cast in the model before exporting)")
        bad = int(np.size(out) - np.count_nonzero(np.isfinite(out)))
        if bad:
            raise SubmissionFailure("bad_output", f"output {name!r} holds {bad} NaN/inf value(s) in a batch of "
                                    f"{n}; the code must be finite for every image")
        checked.append(out)
    return checked


def _text(value, limit: int) -> str:
    """A string from the child's frame, bounded (the child may be the model by then)."""
    return (value if isinstance(value, str) else repr(value))[:limit]


def _is_shape(value) -> bool:
    return (isinstance(value, list) and len(value) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in value))


def _batch_window(value) -> tuple[int, int | None]:
    """The batch sizes the child says the model accepts, ``(lo, hi)``; anything else (the child
    may be the model by then): ``(1, None)``. Only the chunk size and the report depend on it."""
    from harness.sandbox.loaders import MAX_FIXED_BATCH

    def size(v):
        return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_FIXED_BATCH

    if isinstance(value, list) and len(value) == 2 and size(value[0]) and (value[1] is None or size(value[1])):
        if value[1] is None or value[0] <= value[1]:
            return value[0], value[1]
    return 1, None


def _secret_rng() -> np.random.Generator:
    """Order secrets: seeded from the OS, never recorded (a model that could predict the order of
    its inputs could read the factors from an image's position)."""
    return np.random.default_rng(int.from_bytes(os.urandom(16), "little"))


class EncoderSession:
    """A loaded model behind the sandbox. Use through :func:`open_encoder`.

    Attributes
    ----------
    layers : list of str
        Isolation layers actually applied in the child (empty for ``backend="none"``).
    notes : list of str
        Things the report should say: channel tiling, CUDA fallback, unsandboxed runs.
    report : list of str
        One line per layer: applied or not, and why.
    info : dict
        Runtime, version and device used inside the child.
    """

    def __init__(self, submission, *, backend: str, limits: Limits, device: str, require_layers=()):
        self.submission = submission
        self.require_layers = tuple(require_layers)
        self.backend_name = backend
        self.limits = limits
        self.device = device
        self.layers: list[str] = []
        self.notes: list[str] = []
        self.report: list[str] = []
        self.info: dict = {}
        self.images_encoded = 0
        self.batch_window: tuple[int, int | None] = (1, None)
        self.fixed_batch: int | None = None
        self._proc = None
        self._sd = None
        self._log = None
        self._failed: SubmissionFailure | None = None
        self._tiling_noted = False
        self._started = time.monotonic()
        self._killed_for_wall = False
        self._model_has_control = False  # from the "sandboxed" frame on, the child may be the model
        self._cgroup = None
        self._memory_mb = limits.memory_mb
        self._order = _secret_rng()
        self._lock = threading.Lock()  # one request at a time on the channel

    # -- lifecycle ----------------------------------------------------------------------------------

    def _deadline(self, *, loading: bool = False) -> float | None:
        ends = []
        per_call = (self.limits.load_wall_seconds or self.limits.wall_seconds) if loading else self.limits.wall_seconds
        if per_call:
            ends.append(time.monotonic() + per_call)
        if self.limits.total_wall_seconds:
            ends.append(self._started + self.limits.total_wall_seconds)
        return min(ends) if ends else None

    def start(self) -> "EncoderSession":
        sub = self.submission
        if sub.latent_dim > self.limits.max_latent_dim:  # a Submission loaded under another cap
            raise SubmissionFailure("invalid_submission", f"latent_dim {sub.latent_dim} is over this grader's cap "
                                    f"of {self.limits.max_latent_dim} (the challenge sets it)")
        if self.backend_name == "none":
            warnings.warn(UNSANDBOXED_NOTE, stacklevel=3)  # the CLI shows it as one line (harness.cli)
            self.notes.append(UNSANDBOXED_NOTE)
        backend = BACKENDS[self.backend_name]()
        ok, why = backend.available()
        if not ok:
            raise SubmissionFailure("infra_error", f"sandbox backend {self.backend_name!r} is not available: {why}")
        memory_mb = self._memory_mb  # of the whole process tree (cgroup), CUDA or not
        if self.device in ("cuda", "auto") and gpu_devices() and self.limits.memory_mb:
            # CUDA reserves terabytes of virtual address space: RLIMIT_AS would kill it at init
            self.limits = dataclasses.replace(self.limits, memory_mb=None)
            self.notes.append("per-process address-space limit lifted for the CUDA runtime (the cgroup "
                              "memory limit on host memory stays)")
        try:
            layer_plan = backend.layers(self.limits, self.device)
        except OSError as exc:
            raise SubmissionFailure("infra_error", f"could not choose a sandbox uid: {exc}") from None
        try:
            self._sd = prepare_sandbox_dir(sub, uid=layer_plan.get("uid"))
        except SubmissionFailure:
            release_uid(layer_plan.get("uid"))
            raise
        except OSError as exc:
            release_uid(layer_plan.get("uid"))
            raise SubmissionFailure("infra_error", f"could not prepare the sandbox folder: {exc}") from None
        cfg = launcher_config(self._sd, layers=layer_plan, limits=self.limits, device=self.device, submission=sub)
        cgroup_why = "the backend bounds the process tree itself"
        if backend.uses_cgroup:
            self._cgroup, cgroup_why = cgroups.create(memory_mb=memory_mb, max_processes=self.limits.max_processes)
        self._backend = backend
        try:
            self._proc = backend.spawn(self._sd, cfg, cgroup=self._cgroup)
        except OSError as exc:
            self._cleanup()
            raise SubmissionFailure("infra_error", f"could not start the sandbox: {exc}") from None
        self._log = _LogTail(self._proc.stderr)
        for f in (self._proc.stdin, self._proc.stdout):
            os.set_blocking(f.fileno(), False)
            with contextlib.suppress(OSError):  # a batch in 4 pipe fills, not 64 (fewer wake-ups)
                fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        loading = self._deadline(loading=True)
        header, _ = self._request({"config": cfg}, what="setting up the sandbox", ours=True, deadline=loading)
        self.layers = [_text(x, 200) for x in header.get("layers", [])][:64]
        self.report = [_text(x, 1000) for x in header.get("report", [])][:64]
        if self._cgroup is not None and self._cgroup.contains(self._proc.pid):
            self.layers.extend(self._cgroup.layers)
            self.report.extend(self._cgroup.report(memory_mb, self.limits.max_processes))
        elif backend.isolated:
            self.report.append(f"cgroup: NOT applied: {cgroup_why or 'the child could not join it'}")
        self._model_has_control = True  # the launcher's next step hands control to the model's code
        missing = [r for r in self.require_layers
                   if not any(layer == r or layer.startswith(r + ":") for layer in self.layers)]
        if missing:
            self._fail(SubmissionFailure(
                "infra_error", f"required sandbox layer(s) {', '.join(missing)} could not be applied on this "
                "machine (run `harness doctor`)", "\n".join(self.report)))
        header, _ = self._request(None, what="loading the model", deadline=loading)
        info = header.get("info") if isinstance(header.get("info"), dict) else {}
        self.info = {k: _text(info.get(k), 100) for k in ("runtime", "version", "device") if k in info}
        notes = info.get("notes") if isinstance(info.get("notes"), list) else []
        self.notes.extend(_text(n, 300) for n in notes[:10])
        self.batch_window = _batch_window(info.get("batch"))
        lo, hi = self.batch_window
        self.fixed_batch = lo if lo == hi else None
        if self.fixed_batch is not None:
            self.notes.append(f"the model was exported with a fixed batch size of {lo}: it is fed "
                              + ("one image per call" if lo == 1 else
                                 f"{lo} images per call, the last call padded by repeating images"))
        elif (lo, hi) != (1, None):
            self.notes.append(f"the model accepts batches of {lo} to {hi or 'any number of'} images only: it is "
                              "fed chunks of that size, the last padded by repeating images")
        return self

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                protocol.send(self._proc.stdin.fileno(), {"op": "close"}, deadline=time.monotonic() + 2)
                self._proc.wait(timeout=5)
            except (protocol.ChannelClosed, protocol.Deadline, OSError, Exception):
                pass
        self._cleanup()

    def _cleanup(self):
        if self._proc is not None:
            self._backend.kill(self._proc, self._sd)
            for f in (self._proc.stdin, self._proc.stdout):
                with contextlib.suppress(Exception):
                    f.close()
            if self._log is not None:
                self._log.thread.join(timeout=2)
            with contextlib.suppress(Exception):
                self._proc.stderr.close()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._sd is not None:
            self._sd.remove()
            self._sd = None

    @property
    def log(self) -> str:
        """The tail of what the model printed (stdout and stderr)."""
        return self._log.text() if self._log is not None else ""

    # -- requests ----------------------------------------------------------------------------------

    def _fail(self, failure: SubmissionFailure):
        self._failed = failure
        if self._proc is not None:
            self._backend.kill(self._proc, self._sd)
        raise failure

    def _death(self, what: str) -> SubmissionFailure:
        """Why the child is gone, as a failure kind (:func:`harness.sandbox.exits.classify_exit`)."""
        proc = self._proc
        try:
            code = proc.wait(timeout=10)
        except Exception:
            self._backend.kill(proc, self._sd)
            code = proc.wait()
        time.sleep(0.05)
        detail = self.log[-4000:] or None
        wall = self.limits.wall_seconds
        if what in LOADING_STAGES:
            wall = self.limits.load_wall_seconds or wall
        total = self.limits.total_wall_seconds
        spent_all = bool(total) and time.monotonic() - self._started >= total - 0.5
        facts = ExitFacts(code=code, what=what, killed_for_wall=self._killed_for_wall,
                          total_limit=total if spent_all else None,
                          oom_killed=self._cgroup is not None and self._cgroup.oom_killed(),
                          log_tail=detail or "", wall_limit=wall, cpu_limit=self.limits.cpu_seconds,
                          memory_mb=self._memory_mb,
                          file_size_mb=self.limits.file_size_mb)
        return classify_exit(facts, detail)

    def _request(self, header: dict | None, payload=b"", *, what: str, max_payload: int | None = None,
                 deadline: float | None = None, ours: bool = False):
        """Send ``header`` (None: send nothing) and read one reply. ``ours``: the child is still
        setting up the sandbox, so a death is our failure (``infra_error``), not the model's."""
        if self._failed is not None:
            raise self._failed
        deadline = self._deadline() if deadline is None else deadline
        fd_in, fd_out = self._proc.stdin.fileno(), self._proc.stdout.fileno()
        try:
            if header is not None:
                protocol.send(fd_in, header, payload, deadline)
            reply, data = protocol.recv(fd_out, deadline, max_payload=max_payload)
        except (protocol.Deadline, protocol.ChannelClosed, OSError) as exc:
            if isinstance(exc, protocol.Deadline):
                self._killed_for_wall = True
                self._backend.kill(self._proc, self._sd)
            death = self._death(what)
            if ours and death.kind != "memory_exceeded":  # the runtime's import does not fit the limit
                death = SubmissionFailure("infra_error", f"the sandbox failed while {what} ({death.message})",
                                          death.detail)
            self._fail(death)
        except ValueError as exc:  # garbage on the channel: the model wrote to our pipe
            kind = "infra_error" if ours else "bad_output"
            self._fail(SubmissionFailure(kind, f"the result channel was corrupted while {what}: "
                                         f"{_text(str(exc), 200)}"))
        ok = reply.get("ok")
        if not isinstance(ok, bool):
            self._fail(SubmissionFailure("infra_error" if ours else "bad_output",
                                         f"a malformed frame arrived on the result channel while {what}"))
        if not ok:
            self._fail(self._claimed_failure(reply, what))
        return reply, data

    def _claimed_failure(self, reply: dict, what: str) -> SubmissionFailure:
        """The failure a child reports, checked. Once the model has control, the child may be the
        model itself: a claim of infrastructure failure is then the submission's (a model must not
        be able to make us retry it forever, or have its failure not count)."""
        kind, message = reply.get("kind"), _text(reply.get("message"), 500)
        detail = reply.get("detail")
        detail = _text(detail, 8000) if detail is not None else None
        if kind not in FAILURE_KINDS:
            return SubmissionFailure("bad_output", f"the model's process sent an unknown failure kind while {what}",
                                     f"kind: {_text(kind, 100)}; message: {message}")
        if kind == "infra_error" and self._model_has_control:
            return SubmissionFailure("runtime_error", f"the model's process reported an infrastructure failure "
                                     f"while {what}, after the model had taken control: it counts as the "
                                     f"submission's failure ({message})", detail)
        return SubmissionFailure(kind, message, detail)

    # -- encoding ----------------------------------------------------------------------------------

    def _prepare(self, images) -> np.ndarray:
        """NHWC uint8 (or float in [0, 1]), checked against the manifest (sent by chunk in the model's
        layout; the child converts it to the model's declared range)."""
        if not isinstance(images, np.ndarray):
            images = np.asarray(images)
        if images.ndim != 4:
            raise InputError(f"images must be a (N, H, W, C) batch, got shape {images.shape}")
        if images.dtype != np.uint8:
            if images.dtype.kind != "f":
                raise InputError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
            images = images.astype(np.float32, copy=False)
        _, h, w, c = images.shape
        want_c, want_h, want_w = self.submission.input_shape
        if (h, w) != (want_h, want_w) or not (c == want_c or (c == 1 and want_c == 3)):
            raise SubmissionFailure("invalid_submission", f"the model takes {want_c}x{want_h}x{want_w} images "
                                    f"(submission.json 'input') but this dataset has {c}x{h}x{w}")
        if c == 1 and want_c == 3 and not self._tiling_noted:
            self._tiling_noted = True
            self.notes.append("1-channel images were tiled to 3 channels for this 3-channel model")
        return images

    def _encode_chunk(self, chunk: np.ndarray, deadline: float | None, input_range=None) -> list[np.ndarray]:
        n = chunk.shape[0]
        d = self.submission.latent_dim
        names = self.submission.outputs
        chunk = np.ascontiguousarray(chunk)
        # A well-behaved reply is n*d float32s per output; anything larger is refused unread.
        max_payload = len(names) * n * d * 4
        header = {"op": "encode", "shape": list(chunk.shape), "dtype": chunk.dtype.str}
        if input_range is not None:
            header["range"] = input_range
        reply, data = self._request(header, chunk, what=f"encoding a batch of {n}", max_payload=max_payload,
                                    deadline=deadline)
        outputs = self._outputs_from_frame(reply, data, n=n)
        try:
            return check_outputs(outputs, n=n, latent_dim=d, names=names)
        except SubmissionFailure as exc:
            self._fail(exc)

    def _outputs_from_frame(self, reply: dict, data, *, n: int) -> list:
        """The arrays an encode reply describes; a frame that does not add up is ``bad_output``."""
        metas = reply.get("outputs")
        malformed = SubmissionFailure("bad_output", f"the model's process sent a malformed reply for a batch of {n} "
                                      "(the result channel is not the model's to write)")
        if not isinstance(metas, list) or not 1 <= len(metas) <= 8:
            self._fail(malformed)
        outputs, offset = [], 0
        for meta in metas:
            if not (isinstance(meta, dict) and _is_shape(meta.get("shape")) and isinstance(meta.get("dtype"), str)
                    and isinstance(meta.get("bytes"), int) and not isinstance(meta.get("bytes"), bool)):
                self._fail(malformed)
            shape, nbytes = meta["shape"], meta["bytes"]
            if nbytes == 0:  # described, not sent: a dtype other than float32
                outputs.append(_Described(tuple(shape), _text(meta["dtype"], 40)))
                continue
            if (meta["dtype"] not in ("<f4", "float32") or nbytes != math.prod(shape) * 4  # exact: no overflow
                    or offset + nbytes > len(data)):
                self._fail(malformed)
            outputs.append(np.frombuffer(data, dtype=np.float32, count=nbytes // 4, offset=offset).reshape(shape))
            offset += nbytes
        if offset != len(data):
            self._fail(malformed)
        return outputs

    def _encode(self, images, input_range=None) -> list[np.ndarray]:
        """Codes of ``images``; ``input_range`` (validate's probe only) feeds them in another
        convention than the declared one."""
        with self._lock:
            return self._encode_locked(images, input_range)

    def _chunk_size(self) -> int:
        """Images per message: ``limits.batch_size``, rounded down to a multiple of the largest
        batch the model accepts (so only the very last chunk is padded), at least one such batch."""
        step = self.limits.batch_size
        hi = self.batch_window[1]
        if hi is not None:
            step = hi * max(1, step // hi)
        return max(step, self.batch_window[0])

    def _encode_locked(self, images, input_range=None) -> list[np.ndarray]:
        if self._failed is not None:
            raise self._failed
        x = self._prepare(images)
        n = x.shape[0]
        if n == 0:
            d = self.submission.latent_dim
            return [np.zeros((0, d), np.float32) for _ in self.submission.outputs]
        deadline = self._deadline()  # the wall-clock limit covers the whole call, all chunks
        # The model sees the images in a secret order, so a position in a batch says nothing about them.
        order = self._order.permutation(n)
        step = self._chunk_size()
        nchw = self.submission.input_layout != "NHWC"
        # gathered chunk by chunk from the caller's NHWC rows: no whole shuffled copy is held
        parts = [self._encode_chunk(x[order[i:i + step]].transpose(0, 3, 1, 2) if nchw else x[order[i:i + step]],
                                    deadline, input_range) for i in range(0, n, step)]
        self.images_encoded += n
        results = []
        for j in range(len(self.submission.outputs)):
            shuffled = np.concatenate([p[j] for p in parts]) if len(parts) > 1 else parts[0][j]
            codes = np.empty_like(shuffled)
            codes[order] = shuffled
            results.append(codes)
        return results

    def encode(self, images) -> np.ndarray:
        """Codes of a (N, H, W, C) uint8 batch (or float in [0, 1]): float32 (N, latent_dim)."""
        return self._encode(images)[0]

    __call__ = encode

    def encode_with_logvar(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(mean, logvar), each float32 (N, latent_dim); only for manifests declaring ``logvar``."""
        if not self.submission.has_logvar:
            raise InputError("this submission declares no logvar output (submission.json 'outputs')")
        mean, logvar = self._encode(images)
        return mean, logvar


@contextlib.contextmanager
def open_encoder(submission, *, backend: str = "process", limits: Limits | None = None, device: str = "cpu",
                 require_layers=()):
    """Load ``submission`` in the sandbox and yield an :class:`EncoderSession`.

    Parameters
    ----------
    submission : Submission or path
        A loaded :class:`harness.submission.Submission`, or a path given to
        :func:`harness.submission.load` (and closed on exit).
    backend : {"process", "bwrap", "docker", "none"}, default "process"
        How the child is isolated (see :mod:`harness.sandbox.backends`); ``"none"`` runs the model
        in this process, unsandboxed.
    limits : Limits, default Limits()
    device : {"cpu", "cuda", "auto"}, default "cpu"
        ``cuda`` falls back to the CPU with a note in ``session.notes`` when no GPU is usable.
    require_layers : sequence of str, default ()
        Layers that must be applied (``"landlock"``, ``"landlock:fs"``, ``"seccomp"``, ``"uid"``,
        ``"namespaces"``, ...; a name matches itself and its ``name:...`` variants). When one is
        missing the model is not loaded: ``infra_error``. Organizers use it to refuse a weak machine.

    Raises
    ------
    SubmissionFailure
        for every failure of the model (load, forward, output, limits), with its kind.
    InputError
        for a bad argument.
    """
    if backend not in BACKEND_NAMES:
        raise InputError(f"unknown sandbox backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if device not in DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    limits = Limits() if limits is None else limits
    owned = None
    if not hasattr(submission, "manifest"):
        from harness.submission import load

        submission = owned = load(submission, max_latent_dim=limits.max_latent_dim)
    if backend == "none" and require_layers:
        raise InputError("backend 'none' applies no layers; require_layers cannot be met")
    session = EncoderSession(submission, backend=backend, limits=limits, device=device,
                             require_layers=require_layers)
    try:
        session.start()
        yield session
    finally:
        session.close()
        if owned is not None:
            owned.close()
