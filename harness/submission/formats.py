"""Structural checks of model files in pure Python: no model runtime, nothing of the file executed.

A torch.export ``.pt2`` is a zip of JSON that torch turns into Python, so every string an attacker
writes there is checked before any runtime reads it:

- names (parameters, buffers, constants, nodes, arguments, module paths) are pasted unescaped into
  the code torch.fx generates and execs (``getattr(self, "<name>")``, ``def forward(self, <name>)``):
  a name must be a dotted identifier;
- a node's ``target`` is looked up by name on ``torch`` / ``operator`` / ``math`` and called by that
  code; torch's verifier lets through any operator overload and any higher-order operator, among
  them ones that call Python callables or compiled kernels (``flat_apply``, ``invoke_leaf_function``,
  the Triton / AOTInductor / ExecuTorch delegates): only ATen/prims operators, the structural
  higher-order operators (``cond``, ``while_loop``, ...) and the symbolic-shape helpers are accepted;
- ``expr_str`` is evaluated by ``sympy.sympify`` (``eval``) while loading, and ``guards_code`` is
  exec'd by ``program.module()``: both must be expressions of a small grammar (sympy constructors;
  comparisons of input sizes);
- pytree specs (``in_spec`` / ``out_spec``) can import any module by name: only tuples, lists and
  dicts (with identifier or integer keys) are accepted;
- AOTInductor packages (``data/aotinductor/``) are shared libraries torch would load.

The sandboxed loader checks the loaded program again (``harness.sandbox.loaders``), for a child
started without this parent-side check; the rules both apply are in ``harness.pt2_rules``.
"""

from __future__ import annotations

import itertools
import json
import re
import zipfile
import zlib

from harness.errors import SubmissionFailure
from harness.pt2_rules import (TREESPEC_TYPES, guard_problem, is_dotted_name, is_identifier, op_target_problem,
                               shown, spec_key_ok, sympy_expression_problem)

MAX_JSON_BYTES = 64 << 20        # one JSON member of a .pt2, uncompressed
MAX_TOTAL_JSON_BYTES = 128 << 20
MAX_JSON_DEPTH = 256             # torch's own programs nest a few dozen levels

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

# Keys of the serialized program (torch/_export/serde/schema.py) whose string values are names:
# node, argument and keyword names become Python variables (identifiers); the others are module
# paths that become attribute lookups (dotted).
IDENTIFIER_KEYS = frozenset({"name", "as_name"})
NAME_KEYS = frozenset({"fqn", "parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name",
                       "user_input_name", "class_fqn", "path_name"})
NAME_LIST_KEYS = frozenset({"forward_arg_names", "field_names"})
NAME_DICT_KEYS = frozenset({"config", "tensor_values", "sym_int_values", "sym_bool_values", "sym_float_values",
                            "custom_obj_values"})


def _invalid(message: str) -> SubmissionFailure:
    return SubmissionFailure("invalid_submission", message)


def json_depth(text: str) -> int:
    """Nesting depth of JSON text without parsing it (json.loads recurses: deep input must not reach it)."""
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, skeleton), initial=0))


def load_json(data: bytes, what: str):
    """Parse attacker JSON as torch does (UTF-8, json.loads) with bounded size and nesting; raises
    ValueError with a one-line reason."""
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"{what} is larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({type(exc).__name__})") from None


def treespec_problem(text) -> str | None:
    """A pytree spec (a JSON string inside the program): tuples, lists, dicts with identifier or int keys.
    Other node types deserialize by importing a module named in the file."""
    try:
        spec = load_json(text.encode() if isinstance(text, str) else b"", "an input/output spec")
    except ValueError as exc:
        return f"has a malformed input/output spec: {exc}"
    if not (isinstance(spec, list) and len(spec) == 2 and spec[0] == 1):
        return "has an input/output spec of an unknown pytree protocol"
    stack = [spec[1]]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("children_spec", []), list):
            return "has a malformed input/output spec"
        if node.get("type") not in TREESPEC_TYPES:
            return (f"takes or returns a {shown(node.get('type'))}; return a tensor, or a tuple, list or dict of "
                    "tensors")
        context = node.get("context")
        if isinstance(context, str):
            try:
                keys = load_json(context.encode(), "a spec context")
            except ValueError as exc:
                return f"has a malformed input/output spec: {exc}"
            if keys is not None and not (isinstance(keys, list) and all(map(spec_key_ok, keys))):
                return "has input/output dict keys that are not identifiers"
        elif context is not None:
            return "has a malformed input/output spec"
        stack.extend(node.get("children_spec", []))
    return None


def _value_problem(key: str, value) -> str | None:
    """The rule for one (key, value) pair of a program or payload-config JSON, or None."""
    if key in IDENTIFIER_KEYS and isinstance(value, str):
        if value and not is_identifier(value):  # "": a positional argument
            return f"has a node or argument name that is not a Python identifier: {shown(value)}"
    elif key in NAME_KEYS and isinstance(value, str):
        if value and not is_dotted_name(value):  # "": the root module's fqn
            return (f"has a name that is not a dotted Python identifier: {shown(value)}; "
                    "rename the module's parameters, buffers and submodules")
    elif key in NAME_LIST_KEYS and isinstance(value, list):
        bad = [v for v in value if not is_identifier(v)]
        if bad:
            return f"has an argument name that is not a Python identifier: {shown(bad[0])}"
    elif key in NAME_DICT_KEYS and isinstance(value, dict):
        bad = [k for k in value if not is_dotted_name(k)]
        if bad:
            return (f"has a name that is not a dotted Python identifier: {shown(bad[0])}; "
                    "rename the module's parameters, buffers and submodules")
    elif key in ("target", "as_operator") and value is not None:
        return op_target_problem(value)
    elif key == "expr_str":
        return sympy_expression_problem(value)
    elif key == "guards_code":
        if not isinstance(value, list):
            return "has malformed shape guards"
        return next(filter(None, map(guard_problem, value)), None)
    elif key in ("in_spec", "out_spec") and value is not None:
        return treespec_problem(value)
    return None


def json_problem(doc) -> str | None:
    """Walk a parsed program or payload config (iteratively) and apply :func:`_value_problem`."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                problem = _value_problem(key, value)
                if problem:
                    return problem
                if isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return None


def program_inputs_problem(doc) -> str | None:
    """The top graph's inputs become placeholders whose string values torch pastes into guard code:
    an encoder takes tensors only (parameters, buffers, constants and the image batch)."""
    graph = doc.get("graph_module", {}).get("graph", {}) if isinstance(doc, dict) else {}
    for arg in graph.get("inputs", []) if isinstance(graph, dict) else []:
        if not (isinstance(arg, dict) and list(arg) == ["as_tensor"]):
            kind = next(iter(arg), "?") if isinstance(arg, dict) and arg else "?"
            return (f"takes a non-tensor input ({shown(kind)}); export forward(x) with the image batch as "
                    "its only input")
    return None


def constants_problem(doc) -> str | None:
    """Custom (TorchScript class) and opaque constants are unpickled by torch: tensors only."""
    config = doc.get("config", {}) if isinstance(doc, dict) else {}
    for fqn, meta in config.items() if isinstance(config, dict) else ():
        path = meta.get("path_name", "") if isinstance(meta, dict) else ""
        if not (isinstance(path, str) and path.startswith("tensor_")):
            return (f"holds constant {shown(fqn)} that is not a tensor (a pickled object); "
                    "an encoder's constants must be tensors")
    return None


# --- the archive ----------------------------------------------------------------------------------

PT2_FILES = frozenset({"archive_format", "archive_version", "byteorder", "version"})
PT2_FOLDERS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/", ".data/")
LEGACY_FILES = frozenset({"serialized_exported_program.json", "serialized_state_dict.pt",
                          "serialized_state_dict.json", "serialized_constants.pt", "serialized_constants.json",
                          "serialized_example_inputs.pt", "version"})


def _layout(names: list[str]) -> tuple[dict, str | None]:
    """Map each member to its name as torch sees it (without the archive's top folder), or a problem.

    torch's zip reader matches names case-insensitively and takes the first of duplicates, Python's
    zipfile the last: duplicates would let torch read a member that was never checked here.
    """
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        dup = next(n for n in names if lowered.count(n.lower()) > 1)
        return {}, f"holds {shown(dup)} twice; save it again with torch.export.save"
    if any("/" not in n for n in names):  # the pre-2.7 layout: files at the top, read by zipfile
        for n in names:
            if n not in LEGACY_FILES and not n.startswith("extra_files/"):
                return {}, f"holds {shown(n)}, which torch.export.save does not write"
        return {n: n for n in names}, None
    top = names[0].split("/", 1)[0] + "/"
    if not all(n.startswith(top) for n in names):
        return {}, "holds more than one top-level folder; save it again with torch.export.save"
    inner = {n: n[len(top):] for n in names}
    for n, rel in inner.items():
        if rel and rel not in PT2_FILES and not rel.startswith(PT2_FOLDERS) and not rel.endswith("/"):
            return {}, (f"holds {shown(rel)}, which torch.export.save does not write (AOTInductor packages and "
                        "other compiled code are not accepted)")
    return inner, None


def _is_json_member(rel: str) -> bool:
    return (rel.startswith("models/") and not rel.endswith("/")) or (
        rel.startswith("data/") and rel.endswith(".json")) or rel == "serialized_exported_program.json"


def pt2_problem(path: str) -> str | None:
    """Why the .pt2 at ``path`` is refused, or None: the layout, then every JSON member torch parses."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            inner, problem = _layout([i.filename for i in infos])
            if problem:
                return problem
            programs = 0
            total = 0
            for info in infos:
                rel = inner[info.filename]
                if not _is_json_member(rel):
                    continue
                if info.file_size > MAX_JSON_BYTES:
                    return f"holds {shown(rel)} of {info.file_size >> 20} MiB; JSON members are limited to " \
                           f"{MAX_JSON_BYTES >> 20} MiB"
                with zf.open(info) as fh:
                    data = fh.read(MAX_JSON_BYTES + 1)
                total += len(data)
                if total > MAX_TOTAL_JSON_BYTES:
                    return f"holds more than {MAX_TOTAL_JSON_BYTES >> 20} MiB of JSON"
                doc = load_json(data, shown(rel))
                is_program = rel.startswith("models/") or rel == "serialized_exported_program.json"
                programs += is_program
                problem = (json_problem(doc) or (program_inputs_problem(doc) if is_program else None)
                           or (constants_problem(doc) if rel.startswith("data/constants/") else None))
                if problem:
                    return problem
    except ValueError as exc:
        return str(exc)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        return f"is not a readable zip archive ({type(exc).__name__})"
    if not programs:
        return "is a zip but not a torch.export .pt2 archive (no models/*.json)"
    return None


def check_pt2(path: str, rel: str) -> None:
    """Refuse a .pt2 whose JSON would make torch run code (see the module docstring)."""
    problem = pt2_problem(path)
    if problem:
        raise _invalid(f"model file {rel!r} {problem}")
