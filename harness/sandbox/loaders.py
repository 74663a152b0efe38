"""Model loaders: they run inside the sandboxed child (or in-process with ``backend="none"``).

Each loader returns ``(forward, info)``: ``forward(x)`` takes float32 NCHW in [0, 1] and returns
the model's outputs as a list of numpy arrays (unchecked: the parent checks shape, dtype and
finiteness); ``info`` holds the runtime, its version, the device used and notes.
"""

from __future__ import annotations

import contextlib
import os

from harness.allocator import keep_freed_memory
from harness.errors import SubmissionFailure

ONNX_ALLOWED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def _fail(kind: str, message: str, detail: str | None = None) -> SubmissionFailure:
    return SubmissionFailure(kind, message, detail)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: runtimes put the useful part last (TorchScript prints its traceback
    first), so keep the last non-empty line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("can't allocate memory", "cannot allocate memory", "failed to allocate",
                                   "bad_alloc", "out of memory", "std::bad_alloc"))


# --- ONNX ---------------------------------------------------------------------------------------

def _onnx_graph_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _onnx_graph_nodes(attr.g)
            for g in attr.graphs:
                yield from _onnx_graph_nodes(g)


def check_onnx_model(path: str, root: str, channels: int, height: int, width: int) -> None:
    """Refuse unknown op domains and external data outside the submission, before onnxruntime runs."""
    import onnx
    from onnx import external_data_helper

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise _fail("load_error", f"the model file is not a readable ONNX model: {exc}") from None
    local_functions = {(f.domain, f.name) for f in model.functions}
    nodes = list(_onnx_graph_nodes(model.graph))
    for f in model.functions:
        nodes.extend(f.node)
    bad = sorted({n.domain for n in nodes
                  if n.domain not in ONNX_ALLOWED_DOMAINS and (n.domain, n.op_type) not in local_functions})
    if bad:
        raise _fail("load_error", f"the model uses operators from domain(s) {', '.join(map(repr, bad))}; "
                    f"only the standard ONNX domains {', '.join(map(repr, ONNX_ALLOWED_DOMAINS))} are "
                    "allowed: export without custom or contrib ops")
    real_root = os.path.realpath(root)
    base = os.path.dirname(os.path.abspath(path))
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = os.path.join(base, location)
        if (os.path.isabs(location) or not os.path.realpath(target).startswith(real_root + os.sep)
                or os.path.islink(target)):
            raise _fail("load_error", f"tensor {tensor.name!r} keeps its data at {location!r}, outside the "
                        "submission folder; external data must sit next to the model file")
        if not os.path.isfile(target):
            raise _fail("invalid_submission", f"tensor {tensor.name!r} keeps its data in {location!r}, "
                        "which is missing from the submission")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise _fail("invalid_submission", f"the ONNX model has {len(inputs)} inputs; it must take exactly "
                    "one image batch (float32 NCHW)")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise _fail("invalid_submission", f"the ONNX model's input has {len(dims)} dimensions; it must be "
                    "NCHW (4 dimensions)")
    if dims[0] is not None:
        raise _fail("invalid_submission", f"the ONNX model's input has a fixed batch size of {dims[0]}; "
                    "export with a dynamic batch axis (dynamic_axes / dynamic_shapes)")
    for got, want, what in zip(dims[1:], (channels, height, width), ("channels", "height", "width")):
        if got is not None and got != want:
            raise _fail("invalid_submission", f"the ONNX model's input has {what}={got} but "
                        f"submission.json declares {want}")


def load_onnx(path: str, root: str, *, threads: int, device: str, num_outputs: int,
              input_shape: tuple[int, int, int]):
    check_onnx_model(path, root, *input_shape)
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # no GPU-discovery warnings in the participant's log
    notes = []
    providers = ["CPUExecutionProvider"]
    used = "cpu"
    if device in ("cuda", "auto"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            used = "cuda"
        elif device == "cuda":
            notes.append("device cuda requested but onnxruntime has no CUDA provider here "
                         f"(providers: {', '.join(ort.get_available_providers())}); ran on the CPU")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Spinning threads burn the CPU budget while idle between batches.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as exc:
        kind = "memory_exceeded" if is_memory_error(exc) else "load_error"
        raise _fail(kind, f"onnxruntime refused the model: {one_line(exc)}", str(exc)[:4000]) from None
    if used == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        used = "cpu"
        notes.append("the CUDA provider failed to initialise; ran on the CPU")
    outputs = sess.get_outputs()
    if len(outputs) < num_outputs:
        raise _fail("invalid_submission", f"submission.json declares {num_outputs} outputs but the ONNX "
                    f"model has {len(outputs)}")
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in outputs[:num_outputs]]

    def forward(x):
        return [np.asarray(o) for o in sess.run(out_names, {in_name: x})]

    return forward, {"runtime": "onnxruntime", "version": ort.__version__, "device": used, "notes": notes}


# --- torch (TorchScript, torch.export) -------------------------------------------------------------

@contextlib.contextmanager
def _no_pickle_code():
    """While loading a .pt2: torch.load only with weights_only=True, pickle.loads refused.

    torch.export.load retries ``torch.load(weights_only=False)`` when the safe load fails, and
    unpickles some constants with ``pickle.loads``: both could run arbitrary code.
    """
    import pickle

    import torch

    orig_load, orig_loads = torch.load, pickle.loads

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return orig_load(*args, **kwargs)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("harness never unpickles submission content")

    torch.load, pickle.loads = safe_load, refuse
    try:
        yield
    finally:
        torch.load, pickle.loads = orig_load, orig_loads


def _torch_device(device: str, notes: list) -> str:
    import torch

    if device in ("cuda", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if device == "cuda":
            notes.append("device cuda requested but torch sees no CUDA device; ran on the CPU")
    return "cpu"


def load_torch(path: str, *, fmt: str, threads: int, device: str, num_outputs: int):
    import numpy as np
    import torch

    keep_freed_memory()  # torch's batch buffers otherwise page-fault in on every call (harness.allocator)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
    notes: list = []
    dev = _torch_device(device, notes)
    try:
        if fmt == "torchscript":
            module = torch.jit.load(path, map_location=dev)
            module.eval()
        else:
            with _no_pickle_code():
                program = torch.export.load(path)
            module = program.module()
            if dev != "cpu":
                module = module.to(dev)
    except SubmissionFailure:
        raise
    except Exception as exc:
        kind = "memory_exceeded" if is_memory_error(exc) else "load_error"
        raise _fail(kind, f"torch could not load the {fmt} model: {one_line(exc)}", str(exc)[:4000]) from None

    def forward(x):
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(dev))
        if isinstance(out, torch.Tensor):
            out = [out]
        elif isinstance(out, dict):
            out = list(out.values())
        if not isinstance(out, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in out):
            raise _fail("bad_output", f"the model returned {type(out).__name__}; it must return a tensor "
                        "(or a tuple of tensors: mean, logvar)")
        if len(out) < num_outputs:
            raise _fail("bad_output", f"the model returned {len(out)} output(s); submission.json declares "
                        f"{num_outputs}")
        return [np.asarray(o.detach().cpu().numpy()) for o in out[:num_outputs]]

    return forward, {"runtime": "torch", "version": torch.__version__, "device": dev, "notes": notes}


def load_model(*, fmt: str, path: str, root: str, threads: int, device: str, num_outputs: int,
               input_shape: tuple[int, int, int]):
    if fmt == "onnx":
        return load_onnx(path, root, threads=threads, device=device, num_outputs=num_outputs,
                         input_shape=input_shape)
    if fmt in ("torchscript", "torch_export"):
        return load_torch(path, fmt=fmt, threads=threads, device=device, num_outputs=num_outputs)
    raise _fail("invalid_submission", f"unknown format {fmt!r}")


def prepare_batch(images, *, channels: int):
    """uint8 (or float) NCHW -> float32 NCHW in [0, 1], tiling 1 channel to 3 where needed."""
    import numpy as np

    x = images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else \
        images.astype(np.float32, copy=False)
    if x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    return np.ascontiguousarray(x)
