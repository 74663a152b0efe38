"""Model loaders: they run inside the sandboxed child (or in-process with ``backend="none"``).

Each loader returns ``(forward, info)``: ``forward(x)`` takes float32 in the model's declared layout
(NCHW or NHWC) and range (:func:`prepare_batch`) and returns the model's outputs as a list of numpy
arrays (unchecked: the parent checks shape, dtype and finiteness); ``info`` holds the runtime, its
version, the device used, notes and ``batch``, the batch sizes the model accepts (a fixed-batch
model is fed in chunks of its size by :func:`in_batches`).
"""

from __future__ import annotations

import contextlib
import os
import sys

from harness.allocator import keep_freed_memory
from harness.errors import SubmissionFailure
from harness.pt2_rules import (HIGHER_ORDER_OPS, OP_NAMESPACES, PYTHON_OPS, guard_problem, is_dotted_name,
                               is_identifier, not_an_operator, shown, spec_key_ok, sympy_expression_problem)

ONNX_ALLOWED_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
# Domains whose operators onnxruntime implements itself (contrib ops, its internal layouts, ATen):
# a model-local function declared in one of them is not run as written, the runtime's kernel of
# that name runs instead. The domains onnxruntime registers schemas for are added at check time.
ONNX_RESERVED_DOMAIN_PREFIXES = ("ai.onnx", "com.microsoft", "com.ms.", "org.pytorch")
MAX_ONNX_SUBGRAPH_DEPTH = 64
MAX_ONNX_NODES = 100_000
#: The largest fixed batch size a model may have (it is fed chunks of exactly that many images).
MAX_FIXED_BATCH = 4096


# What each format's loader imports: the launcher imports it before the model has control, so a
# runtime missing from the grader's environment (or image) is our infra_error, never a load_error.
# ONNX models are checked with onnx's generated protobuf classes alone (``_onnx_proto``): the onnx
# package's own import pulls in ml_dtypes, 0.6-0.8 CPU-s of every sandbox start on these machines.
RUNTIME_MODULES = {"onnx": ("numpy", "google.protobuf", "onnxruntime"),
                   "torchscript": ("numpy", "torch"),
                   "torch_export": ("numpy", "torch", "torch.export", "sympy")}


def import_runtime(fmt: str) -> None:
    """Import the runtime modules of ``fmt``; raise ``SubmissionFailure("infra_error")`` naming the
    one this environment lacks."""
    import importlib

    for name in RUNTIME_MODULES.get(fmt, ()):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install raising anything
            if is_memory_error(exc):  # the runtime's libraries do not fit the job's memory limit
                raise _fail("memory_exceeded", f"importing {name} needs more memory than the limit allows "
                            f"({one_line(exc, 200)})") from None
            raise _fail("infra_error", f"the sandbox's Python cannot import {name} ({one_line(exc, 200)}), which "
                        f"{fmt} models need: the grader's environment or image lacks it, the submission is "
                        "not at fault") from None
    if fmt == "onnx":
        try:
            _onnx_proto()
        except Exception as exc:  # noqa: BLE001 - onnx missing or broken: ours
            raise _fail("infra_error", f"the sandbox's Python cannot load onnx's protobuf classes "
                        f"({one_line(exc, 200)}), which ONNX models need: the grader's environment or image "
                        "lacks the onnx package, the submission is not at fault") from None


_ONNX_PROTO = None


def _onnx_proto():
    """onnx's generated protobuf module (ModelProto, TensorProto, ...), loaded from its file without
    running the onnx package's ``__init__``. Where onnx is already imported (backend "none"), its own."""
    global _ONNX_PROTO
    if _ONNX_PROTO is None:
        if "onnx" in sys.modules:
            import onnx

            _ONNX_PROTO = onnx.onnx_ml_pb2
        else:
            import importlib.util

            package = importlib.util.find_spec("onnx")
            if package is None or not package.submodule_search_locations:
                raise ImportError("no module named 'onnx'")
            path = os.path.join(list(package.submodule_search_locations)[0], "onnx_ml_pb2.py")
            spec = importlib.util.spec_from_file_location("_harness_onnx_ml_pb2", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _ONNX_PROTO = module
    return _ONNX_PROTO


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
    # "failed to map segment": the dynamic loader could not map a runtime's library under RLIMIT_AS
    return any(s in text for s in ("can't allocate memory", "cannot allocate memory", "failed to allocate",
                                   "bad_alloc", "out of memory", "std::bad_alloc",
                                   "failed to map segment from shared object"))


# --- ONNX ---------------------------------------------------------------------------------------

def _onnx_nodes(model):
    """Every node: the main graph's, the local functions', and those of every subgraph (If/Loop/Scan
    bodies) inside either. An explicit stack, bounded in depth and count: a file can nest subgraphs
    as deep as protobuf allows and hold millions of nodes."""
    stack = [(model.graph.node, 0)] + [(f.node, 0) for f in model.functions]
    count = 0
    while stack:
        nodes, depth = stack.pop()
        for node in nodes:
            count += 1
            if count > MAX_ONNX_NODES:
                raise _fail("load_error", f"the model has more than {MAX_ONNX_NODES} nodes (subgraphs and "
                            "functions included)")
            yield node
            for attr in node.attribute:
                graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
                if graphs and depth >= MAX_ONNX_SUBGRAPH_DEPTH:
                    raise _fail("load_error", f"the model nests subgraphs (If/Loop/Scan bodies) more than "
                                f"{MAX_ONNX_SUBGRAPH_DEPTH} deep")
                stack.extend((g.node, depth + 1) for g in graphs)


def _onnx_tensors(model):
    """Every tensor that can keep its data outside the file: initializers (dense and sparse) of the
    main graph and of every subgraph, and tensor attributes of every node (functions' included)."""

    def of_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)

    yield from of_graph(model.graph)
    for node in _onnx_nodes(model):
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from of_graph(graph)


_RUNTIME_DOMAINS: set | None = None


def _runtime_domains() -> set:
    """The op domains onnxruntime has schemas for (its contrib and internal ones included)."""
    global _RUNTIME_DOMAINS
    if _RUNTIME_DOMAINS is None:
        try:
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

            _RUNTIME_DOMAINS = {s.domain.lower() for s in ort_c.get_all_operator_schema()}
        except Exception:  # noqa: BLE001 - the prefixes above still hold
            _RUNTIME_DOMAINS = set()
    return _RUNTIME_DOMAINS


def onnx_domain_is_reserved(domain: str) -> bool:
    d = domain.strip().lower()
    return d == "" or d.startswith(ONNX_RESERVED_DOMAIN_PREFIXES) or d in _runtime_domains()


def _check_onnx_domains(model) -> None:
    """Operators must be standard ONNX ones or calls of the model's own functions, and those functions
    must live in a domain of their own: one named ("com.microsoft", "Gelu") would run onnxruntime's
    contrib kernel, not its body."""
    for f in model.functions:
        if onnx_domain_is_reserved(f.domain):
            raise _fail("load_error", f"the model defines a local function {shown(f.name)} in the domain "
                        f"{shown(f.domain)}, which belongs to ONNX or onnxruntime (the runtime's own kernel would "
                        "run instead of the function): give model-local functions a domain of your own, "
                        "e.g. 'my.functions'")
    local_functions = {(f.domain, f.name) for f in model.functions}
    bad = sorted({n.domain for n in _onnx_nodes(model)
                  if n.domain not in ONNX_ALLOWED_DOMAINS and (n.domain, n.op_type) not in local_functions})
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise _fail("load_error", f"the model uses operators from domain(s) {', '.join(map(shown, bad[:3]))}{more}; "
                    f"only the standard ONNX domains {', '.join(map(repr, ONNX_ALLOWED_DOMAINS))} (and the model's "
                    "own functions) are allowed: export without custom or contrib ops")


def check_onnx_model(path: str, root: str, channels: int, height: int, width: int,
                     layout: str = "NCHW") -> int | None:
    """Refuse unknown op domains, local functions in runtime-owned domains, external data outside
    the submission and an input that disagrees with the manifest, before onnxruntime runs. Returns
    the model's fixed batch size, or None when its batch axis is dynamic."""
    proto = _onnx_proto()
    try:
        with open(path, "rb") as fh:
            model = proto.ModelProto.FromString(fh.read())
    except Exception as exc:
        raise _fail("load_error", f"the model file is not a readable ONNX model: {one_line(exc, 200)}") from None
    _check_onnx_domains(model)
    real_root = os.path.realpath(root)
    base = os.path.dirname(os.path.abspath(path))
    for tensor in _onnx_tensors(model):
        if not (tensor.HasField("data_location") and tensor.data_location == proto.TensorProto.EXTERNAL):
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
                    f"one image batch (float32 {layout})")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise _fail("invalid_submission", f"the ONNX model's input has {len(dims)} dimensions; it must be "
                    f"{layout} (4 dimensions)")
    layout_problem = input_dims_problem(dims[1:], (channels, height, width), layout, what="the ONNX model's input")
    if layout_problem:
        raise _fail("invalid_submission", layout_problem)
    if dims[0] is None:
        return None
    name = inputs[0].name if is_identifier(inputs[0].name) and len(inputs[0].name) <= 40 else "input"
    if not 1 <= dims[0] <= MAX_FIXED_BATCH:
        raise _fail("invalid_submission", f"the ONNX model's input has a fixed batch size of {dims[0]}"
                    f"{' (more than the harness feeds at once)' if dims[0] else ''}; export with a dynamic batch "
                    f"axis: {onnx_export_hint(name)}")
    return dims[0]


def onnx_export_hint(name: str = "input") -> str:
    return (f'torch.onnx.export(model, (x,), "encoder.onnx", input_names=["{name}"], '
            f'dynamic_axes={{"{name}": {{0: "batch"}}}})')


PT2_EXPORT_HINT = ('torch.export.export(model, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}) '
                   "(the key is forward's argument name)")


def input_dims_problem(dims, declared, layout: str, *, what: str) -> str | None:
    """Why the model's non-batch input dims (``None``: dynamic) disagree with the declared
    ``(channels, height, width)`` in ``layout``, saying so when they fit the other layout."""
    channels, height, width = declared
    orders = {"NCHW": (channels, height, width), "NHWC": (height, width, channels)}
    fits = lambda want: all(g is None or g == w for g, w in zip(dims, want))  # noqa: E731
    if fits(orders[layout]):
        return None
    shown_dims = "[N, " + ", ".join("?" if d is None else str(d) for d in dims) + "]"
    other = "NHWC" if layout == "NCHW" else "NCHW"
    if fits(orders[other]):
        return (f"{what} looks {other} ({shown_dims}) but submission.json declares {layout}: declare "
                f'"layout": "{other}" in submission.json\'s input')
    names = ("channels", "height", "width") if layout == "NCHW" else ("height", "width", "channels")
    got, want, field = next((g, w, n) for g, w, n in zip(dims, orders[layout], names) if g is not None and g != w)
    return (f"{what} has {field}={got} ({shown_dims}, read as {layout}) but submission.json declares {want}")


def load_onnx(path: str, root: str, *, threads: int, device: str, num_outputs: int,
              input_shape: tuple[int, int, int], layout: str = "NCHW"):
    fixed = check_onnx_model(path, root, *input_shape, layout=layout)
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

    return forward, {"runtime": "onnxruntime", "version": ort.__version__, "device": used, "notes": notes,
                     "batch": [fixed, fixed] if fixed else [1, None]}


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


# --- torch.export: what must hold before program.module() generates and runs code -------------
# The parent checks the .pt2's JSON before any runtime sees it (harness.submission.formats, which
# documents each attack); the child checks what torch actually loaded, for a child started without
# that check. Both apply the rules of harness.pt2_rules, which the child's private copy holds.


@contextlib.contextmanager
def _no_code_from_the_file(refused: list):
    """While loading a .pt2, refuse what would run code named by the file; each refusal's message
    goes to ``refused`` (torch wraps the exceptions raised here into its own, or swallows them).

    - sympy.sympify evals every ``expr_str``: only expressions of sizes (``sympy_expression_problem``);
    - pytree specs import the module a context names (``__enum__``, defaultdict factories);
    - custom-object constants go through TorchScript's unpickler;
    - an AOTInductor package (``data/aotinductor/``) is a shared library torch would load.
    """
    import types

    import sympy
    import torch
    from torch.export.pt2_archive import _package
    from torch.utils import _pytree

    saved = (sympy.sympify, _pytree.importlib, torch._C._pickle_load_obj, _package._load_aoti)

    def sympify(a, *args, **kwargs):
        if isinstance(a, str) and sympy_expression_problem(a):
            return refuse(f"has a symbolic shape that is not a sympy expression of sizes: {shown(a)}")
        return saved[0](a, *args, **kwargs)

    def refuse(message, *args, **kwargs):
        refused.append(message)
        raise ValueError("harness refuses to run code named by the model file")

    sympy.sympify = sympify
    _pytree.importlib = types.SimpleNamespace(metadata=saved[1].metadata, import_module=lambda name, *a: refuse(
        f"names a Python module to import in an input/output spec: {shown(name)}"))
    torch._C._pickle_load_obj = lambda *a: refuse("holds a custom-object constant (a pickle); an encoder's constants "
                                                  "must be tensors")
    _package._load_aoti = lambda *a, **k: refuse("holds an AOTInductor package (compiled code), which is not accepted")
    try:
        yield
    finally:
        sympy.sympify, _pytree.importlib, torch._C._pickle_load_obj, _package._load_aoti = saved


def _callable_problem(target) -> str | None:
    """Node targets are called by the generated code: ATen/prims operators, a few higher-order
    operators and the symbolic-shape helpers, each the very object torch names so."""
    import math
    import operator

    import torch

    if isinstance(target, torch._ops.OpOverload):
        if target.namespace in OP_NAMESPACES:
            return None
        qual = f"torch.ops.{target.namespace}.{target.__name__}"
    elif isinstance(target, torch._ops.HigherOrderOperator):
        if target.name() in HIGHER_ORDER_OPS and getattr(torch.ops.higher_order, target.name(), None) is target:
            return None
        qual = f"torch.ops.higher_order.{target.name()}"
    else:
        qual = f"{getattr(target, '__module__', None)}.{getattr(target, '__name__', type(target).__name__)}"
        if qual in PYTHON_OPS:
            first, *rest = qual.split(".")
            obj = {"_operator": operator, "math": math, "torch": torch}[first]
            for name in rest:
                obj = getattr(obj, name, None)
            if obj is target:
                return None
    return not_an_operator(qual)


def _node_problem(node, *, top: bool) -> str | None:
    import torch
    from torch.utils import _pytree as pytree

    if node.op not in ("placeholder", "call_function", "get_attr", "output"):
        return f"has a {shown(node.op)} node; torch.export programs call functions only"
    if not is_identifier(node.name):
        return f"has a node named {shown(node.name)}, which is not a Python identifier"
    if node.op == "get_attr" and not is_dotted_name(node.target):
        return f"reads the attribute {shown(node.target)}, which is not a dotted Python identifier"
    if node.op == "placeholder" and top and not isinstance(node.meta.get("val"), torch.Tensor):
        return (f"takes a non-tensor input {shown(node.name)}; export forward(x) with the image batch as its "
                "only input")
    if node.op != "call_function":
        return None
    bad = next((k for k in node.kwargs if not is_identifier(k)), None)
    if bad is not None:
        return f"passes a keyword argument named {shown(bad)}, which is not a Python identifier"
    for leaf in [node.target] + [a for a in pytree.tree_leaves((node.args, node.kwargs))
                                 if callable(a) and not isinstance(a, torch.fx.Node)]:
        problem = _callable_problem(leaf)
        if problem:
            return problem
    return None


def _treespec_problem(spec) -> str | None:
    import collections

    stack = [spec]
    while stack:
        s = stack.pop()
        if s is None or s.is_leaf():
            continue
        if s.type not in (tuple, list, dict, collections.OrderedDict):
            return f"takes or returns a {shown(getattr(s.type, '__name__', s.type))}; return a tensor, or a " \
                   "tuple, list or dict of tensors"
        if s.type in (dict, collections.OrderedDict) and not all(map(spec_key_ok, s.context)):
            return "has input/output dict keys that are not identifiers"
        stack.extend(s.children())
    return None


def pt2_program_problem(program) -> str | None:
    """Why a loaded ExportedProgram must not reach ``program.module()``, or None.

    module() generates Python from the program's names (``getattr(self, "<fqn>")``, argument names,
    node names, keyword names), calls its node targets and execs its guards."""
    import torch

    sig = program.graph_signature
    names = [*program.state_dict, *program.constants]
    for spec in [*sig.input_specs, *sig.output_specs]:
        names += [getattr(spec.arg, "name", "") or "", spec.target or ""]
    arg_names: list = []
    specs = [program.call_spec.in_spec, program.call_spec.out_spec]
    for entry in program.module_call_graph:
        names.append(entry.fqn)
        if entry.signature is not None:
            arg_names += entry.signature.forward_arg_names or []
            specs += [entry.signature.in_spec, entry.signature.out_spec]
    bad = next((n for n in names if n and not is_dotted_name(n)), None)
    if bad is not None:
        return (f"has a name that is not a dotted Python identifier: {shown(bad)}; rename the module's "
                "parameters, buffers and submodules")
    bad = next((n for n in arg_names if not is_identifier(n)), None)
    if bad is not None:
        return f"has an argument name that is not a Python identifier: {shown(bad)}"
    for spec in specs:
        problem = _treespec_problem(spec)
        if problem:
            return problem
    for module in program.graph_module.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                problem = _node_problem(node, top=module is program.graph_module)
                if problem:
                    return problem
    bad = next((g for g in getattr(program, "_guards_code", None) or [] if guard_problem(g)), None)
    if bad is not None:
        return f"has a shape guard that is not a comparison of input sizes: {shown(bad)}"
    return None


def _load_exported_program(path: str):
    """torch.export.load with pickles and code named by the file refused, then the program checked
    before anything generates code from it; the checks' refusals are ``invalid_submission``."""
    import torch

    refused: list = []
    try:
        with _no_pickle_code(), _no_code_from_the_file(refused):
            program = torch.export.load(path)
    except Exception:
        if not refused:
            raise
    if refused:
        raise _fail("invalid_submission", f"the .pt2 {refused[0]}")
    problem = pt2_program_problem(program)
    if problem:
        raise _fail("invalid_submission", f"the .pt2 {problem}")
    return program


def pt2_batch_window(program, declared: tuple[int, int, int], layout: str) -> list:
    """``[lo, hi]``: the batch sizes the program accepts (``hi`` None: no upper bound), read from its
    image input's example shape and range constraints; a static channel/height/width that
    disagrees with the manifest is ``invalid_submission`` (saying so when it fits the other layout)."""
    import torch
    from torch.export.graph_signature import InputKind

    users = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]
    node = next((n for n in program.graph.nodes if n.op == "placeholder" and len(users) == 1 and n.name == users[0]),
                None)
    val = node.meta.get("val") if node is not None else None
    if not isinstance(val, torch.Tensor):
        return [1, None]  # not one image input: the first forward says what is wrong
    shape = list(val.shape)
    if len(shape) != 4:
        raise _fail("invalid_submission", f"the .pt2 program's input has {len(shape)} dimensions; it must be "
                    f"{layout} (4 dimensions)")
    dims = [d if isinstance(d, int) else None for d in shape[1:]]
    problem = input_dims_problem(dims, declared, layout, what="the .pt2 program's input")
    if problem:
        raise _fail("invalid_submission", problem)
    batch = shape[0]
    if isinstance(batch, int):
        if not 1 <= batch <= MAX_FIXED_BATCH:
            raise _fail("invalid_submission", f"the .pt2 program was exported for a fixed batch size of {batch}"
                        f"{' (more than the harness feeds at once)' if batch else ''}; export with a dynamic "
                        f"batch dimension: {PT2_EXPORT_HINT}")
        return [batch, batch]
    bounds = program.range_constraints.get(getattr(getattr(batch, "node", None), "expr", None))
    if bounds is None:
        return [1, None]  # an expression of sizes, not one symbol: feed as usual
    lo, hi = _finite_int(bounds.lower), _finite_int(bounds.upper)
    lo = max(1, lo or 1)
    if hi is not None and (hi < lo or lo > MAX_FIXED_BATCH):
        raise _fail("invalid_submission", f"the .pt2 program accepts batch sizes {lo} to {hi} only; export with "
                    f"a dynamic batch dimension: {PT2_EXPORT_HINT}")
    if hi is None and lo > MAX_FIXED_BATCH:
        raise _fail("invalid_submission", f"the .pt2 program needs batches of at least {lo} images; export with "
                    f"a dynamic batch dimension from 1: {PT2_EXPORT_HINT}")
    return [lo, hi]


def _finite_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):  # int_oo, -int_oo, sympy oo
        return None


def _is_shape_guard(exc: BaseException) -> bool:
    """A torch.export program refusing its input's shape (torch's guard text is not shown)."""
    text = str(exc).lstrip()
    return isinstance(exc, (AssertionError, RuntimeError, ValueError)) and text.startswith(
        ("Guard failed", "Expected input at"))


def _torch_device(device: str, notes: list) -> str:
    import torch

    if device in ("cuda", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if device == "cuda":
            notes.append("device cuda requested but torch sees no CUDA device; ran on the CPU")
    return "cpu"


def load_torch(path: str, *, fmt: str, threads: int, device: str, num_outputs: int,
               input_shape: tuple[int, int, int] | None = None, layout: str = "NCHW"):
    import numpy as np
    import torch

    keep_freed_memory()  # torch's batch buffers otherwise page-fault in on every call (harness.allocator)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel work
        torch.set_num_interop_threads(1)
    notes: list = []
    dev = _torch_device(device, notes)
    window = [1, None]  # TorchScript says nothing about its shapes
    try:
        if fmt == "torchscript":
            module = torch.jit.load(path, map_location=dev)
            module.eval()
        else:
            program = _load_exported_program(path)
            if input_shape is not None:
                window = pt2_batch_window(program, tuple(input_shape), layout)
            module = program.module()
            if dev != "cpu":
                module = module.to(dev)
    except SubmissionFailure:
        raise
    except Exception as exc:
        kind = "memory_exceeded" if is_memory_error(exc) else "load_error"
        raise _fail(kind, f"torch could not load the {fmt} model: {one_line(exc)}", str(exc)[:4000]) from None

    def forward(x):
        try:
            with torch.inference_mode():
                out = module(torch.from_numpy(x).to(dev))
        except Exception as exc:
            if fmt == "torch_export" and _is_shape_guard(exc):
                raise _fail("invalid_submission", f"the .pt2 program does not accept an input of shape "
                            f"{list(x.shape)} (its shapes were fixed when it was exported); export with "
                            f"{PT2_EXPORT_HINT}") from None
            raise
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

    return forward, {"runtime": "torch", "version": torch.__version__, "device": dev, "notes": notes,
                     "batch": window}


def load_model(*, fmt: str, path: str, root: str, threads: int, device: str, num_outputs: int,
               input_shape: tuple[int, int, int], layout: str = "NCHW"):
    """``(forward, info)`` for the model; ``forward`` takes any batch size: a model that accepts
    only some (``info["batch"]`` = ``[lo, hi]``, ``hi`` None: no bound) is fed in chunks of them."""
    if fmt == "onnx":
        forward, info = load_onnx(path, root, threads=threads, device=device, num_outputs=num_outputs,
                                  input_shape=input_shape, layout=layout)
    elif fmt in ("torchscript", "torch_export"):
        forward, info = load_torch(path, fmt=fmt, threads=threads, device=device, num_outputs=num_outputs,
                                   input_shape=input_shape, layout=layout)
    else:
        raise _fail("invalid_submission", f"unknown format {fmt!r}")
    lo, hi = info.get("batch") or [1, None]
    return in_batches(forward, lo, hi), info


def in_batches(forward, lo: int, hi: int | None):
    """``forward`` for any batch size, calling the model only with ``lo`` to ``hi`` rows: a larger
    batch is cut into chunks of ``hi``, a smaller one (the last chunk) padded to ``lo`` by repeating
    its rows; the padded rows' outputs are dropped."""
    import numpy as np

    if lo <= 1 and hi is None:
        return forward

    def run(x):
        n = x.shape[0]
        if lo <= n and (hi is None or n <= hi):
            return forward(x)
        step = hi or n
        parts = []
        for start in range(0, n, step):
            piece = x[start:start + step]
            m = piece.shape[0]
            if m < lo:
                piece = np.ascontiguousarray(piece[np.arange(lo) % m])
            outs = forward(piece)
            if not all(isinstance(o, np.ndarray) and o.ndim >= 1 and o.shape[0] == piece.shape[0] for o in outs):
                return outs  # not one row per image: the parent's checks say what came back
            parts.append([o[:m] for o in outs])
        return [np.concatenate([p[j] for p in parts]) for j in range(min(map(len, parts)))]

    return run


#: ``input.range`` values besides mean/std (as submission.json writes them)
NAMED_RANGES = ([0, 1], [-1, 1], [0, 255])


def check_range(value, channels: int):
    """``value`` as the child applies it: one of :data:`NAMED_RANGES`, or ``(mean, std)`` float32
    arrays of ``channels`` values (std > 0, finite). The parent validated the manifest; this is the
    child's own check of what its config says."""
    import numpy as np

    if value in NAMED_RANGES:
        return list(value)
    if isinstance(value, dict) and set(value) == {"mean", "std"}:
        mean = np.asarray(value["mean"], dtype=np.float32)
        std = np.asarray(value["std"], dtype=np.float32)
        if (mean.shape == std.shape == (channels,) and np.isfinite(mean).all() and np.isfinite(std).all()
                and (std > 0).all()):
            return mean, std
    raise ValueError(f"not an input range: {str(value)[:100]}")


def prepare_batch(images, *, channels: int, layout: str = "NCHW", input_range=None):
    """uint8 (or float in [0, 1]) in the model's layout -> float32 in the model's range, 1 channel
    tiled to 3 where needed. ``input_range`` is a value of :func:`check_range` (None: ``[0, 1]``): ``[0, 1]`` divides
    by 255, ``[0, 255]`` keeps the bytes' values exactly, ``[-1, 1]`` is ``2x - 1`` and mean/std is
    ``(x - mean) / std`` per channel, with x in [0, 1]."""
    import numpy as np

    axis = 1 if layout == "NCHW" else 3
    input_range = [0, 1] if input_range is None else input_range
    byte = isinstance(input_range, list) and input_range == [0, 255]
    if images.dtype == np.uint8:
        x = images.astype(np.float32)
        if not byte:
            x /= np.float32(255.0)
    else:
        x = images.astype(np.float32, copy=False)
        if byte:
            x = x * np.float32(255.0)
    if x.shape[axis] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=axis)
    if isinstance(input_range, list) and input_range == [-1, 1]:
        x = x * np.float32(2.0) - np.float32(1.0)
    elif not isinstance(input_range, list):
        mean, std = input_range
        shape = [1, 1, 1, 1]
        shape[axis] = channels
        x = (x - mean.reshape(shape)) / std.reshape(shape)
    return np.ascontiguousarray(x, dtype=np.float32)
