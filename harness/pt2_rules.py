"""The rules for a torch.export ``.pt2``, kept once for the two places that apply them.

The parent checks the archive's JSON before any runtime reads it (``harness.submission.formats``,
which documents each attack); the sandboxed child checks the program torch actually loaded, before
``program.module()`` generates and runs code from it (``harness.sandbox.loaders``). Both must accept
and refuse the same names, operators, expressions and pytree types, so both import this module. The
child runs from a private copy of a few modules (``harness.sandbox.backends._copy_package``), which
holds this one: it therefore imports the standard library only.
"""

from __future__ import annotations

import ast
import re

MAX_EXPRESSION_CHARS = 4096      # one expr_str or guard

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")  # "layers.0.weight": nn.Sequential indexes are digits
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OP_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")     # aten ops may start with one underscore, never two
_OVERLOAD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

OP_NAMESPACES = frozenset({"aten", "prims"})
HIGHER_ORDER_OPS = frozenset({"cond", "while_loop", "while_loop_stack_output", "map_impl", "scan",
                              "associative_scan", "wrap_with_set_grad_enabled", "wrap_with_autocast",
                              "invoke_subgraph", "auto_functionalized", "auto_functionalized_v2", "with_effects",
                              "out_dtype", "flex_attention", "hints_wrapper"})
# The builtins torch's verifier accepts, as torch serializes them (torch._export.serde: _SYM_OPS).
PYTHON_OPS = frozenset({
    "_operator.abs", "_operator.add", "_operator.and_", "_operator.eq", "_operator.floordiv", "_operator.ge",
    "_operator.getitem", "_operator.gt", "_operator.le", "_operator.lshift", "_operator.lt", "_operator.mod",
    "_operator.mul", "_operator.ne", "_operator.neg", "_operator.not_", "_operator.or_", "_operator.pos",
    "_operator.pow", "_operator.rshift", "_operator.sub", "_operator.truediv", "math.trunc", "math.floor",
    "math.ceil", "math.sqrt", "torch._sym_sqrt", "torch.sym_float", "torch.sym_int", "torch.sym_ite",
    "torch.sym_max", "torch.sym_min", "torch.sym_not", "torch.sym_sum",
    "torch.fx.experimental.symbolic_shapes.cast_symbool_to_symint_guardless"})

# sympy.srepr output of torch's symbolic shapes: constructors, and torch's sympy functions.
SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne",
    "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan", "LessThan",
    "GreaterThan", "And", "Or", "Not", "floor", "ceiling", "FloorDiv", "ModularIndexing", "Where", "PythonMod",
    "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow",
    "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity"})
SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "int_oo", "pi", "E"})
_SYMBOL = re.compile(r"[a-z]{1,4}[0-9]+")  # torch's shape symbols: s77, u0, zuf1, ...
_NUMBER_TEXT = re.compile(r"[-+]?[0-9][0-9.eE+-]*")

# Guards as torch's PythonPrinter writes them: L['x'].size()[0] >= 2, math.floor(...), max(...).
GUARD_NAMES = frozenset({"L", "math", "abs", "min", "max", "int", "float", "round",
                         "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
GUARD_ATTRS = frozenset({"size", "stride", "storage_offset", "dim", "numel", "floor", "ceil", "trunc", "sqrt",
                         "isnan", "isinf", "inf", "nan", "pi", "exp", "log", "log2"})
_OPERATOR_NODES = (ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)

# Pytree node types as the JSON names them (None: a leaf); the child compares the types themselves.
TREESPEC_TYPES = frozenset({None, "builtins.tuple", "builtins.list", "builtins.dict", "collections.OrderedDict"})


def shown(text, limit: int = 60) -> str:
    """An attacker's string for a one-line message: control characters replaced, at most ``limit``."""
    text = str(text)
    cut = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(cut + ("..." if len(text) > limit else ""))


def is_identifier(text) -> bool:
    """An ASCII Python identifier: what becomes a variable or keyword name in generated code."""
    return isinstance(text, str) and bool(_IDENTIFIER.fullmatch(text))


def is_dotted_name(text) -> bool:
    """``a.b_1.0``: every part an ASCII identifier or an index; nothing else reaches fx codegen."""
    return isinstance(text, str) and all(_PART.fullmatch(p) for p in text.split("."))


def spec_key_ok(key) -> bool:
    """Dict keys of an input spec become keyword names in generated code (``{'<key>': x}``)."""
    return (isinstance(key, int) and not isinstance(key, bool)) or is_identifier(key)


def not_an_operator(qual) -> str:
    """The refusal of a node target named ``qual``."""
    return (f"calls {shown(qual)}, which is not an ATen operator; export a model built from torch "
            "operators only (no custom ops, Python callables or compiled kernels)")


def op_target_problem(target) -> str | None:
    """Why a node target (or an operator argument), as the JSON names it, is refused, or None."""
    if not isinstance(target, str):
        return f"has a node target that is not a string ({shown(target)})"
    parts = target.split(".")
    if target in PYTHON_OPS:
        return None
    if (len(parts) == 5 and parts[:2] == ["torch", "ops"] and parts[2] in OP_NAMESPACES
            and _OP_NAME.fullmatch(parts[3]) and _OVERLOAD.fullmatch(parts[4])):
        return None
    if len(parts) == 4 and parts[:3] == ["torch", "ops", "higher_order"] and parts[3] in HIGHER_ORDER_OPS:
        return None
    return not_an_operator(target)


def _parse_expression(text: str, what: str) -> ast.AST:
    if not isinstance(text, str) or len(text) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"has a {what} that is not a string of at most {MAX_EXPRESSION_CHARS} characters")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ValueError(f"has a {what} that is not an expression: {shown(text)}") from None


def _constant_ok(value) -> bool:
    if isinstance(value, str):
        return bool(_IDENTIFIER.fullmatch(value) or _NUMBER_TEXT.fullmatch(value))
    return value is None or isinstance(value, (bool, int, float))


def sympy_expression_problem(text) -> str | None:
    """``expr_str`` goes to sympy.sympify, which evals it: only calls of sympy constructors, symbols
    and numbers (torch writes ``sympy.srepr``: ``Mul(Integer(2), Symbol('s0', positive=True))``)."""
    try:
        tree = _parse_expression(text, "symbolic shape")
    except ValueError as exc:
        return str(exc)
    for node in ast.walk(tree):  # breadth-first with a queue: no recursion on deep input
        if isinstance(node, ast.Call):
            ok = (isinstance(node.func, ast.Name) and node.func.id in SYMPY_CALLS
                  and not any(isinstance(a, ast.Starred) for a in node.args)
                  and all(k.arg and isinstance(k.value, ast.Constant) and isinstance(k.value.value, (bool, int))
                          for k in node.keywords))
        elif isinstance(node, ast.Name):
            ok = node.id in SYMPY_CALLS or node.id in SYMPY_NAMES or bool(_SYMBOL.fullmatch(node.id))
        elif isinstance(node, ast.Constant):
            ok = _constant_ok(node.value)
        else:
            ok = isinstance(node, (ast.Expression, ast.keyword, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare,
                                   *_OPERATOR_NODES))
        if not ok:
            return f"has a symbolic shape that is not a sympy expression of sizes: {shown(text)}"
    return None


def guard_problem(text) -> str | None:
    """``guards_code`` is exec'd by ``program.module()`` with ``torch`` in scope: only comparisons and
    arithmetic of the inputs' sizes (``L['x'].size()[0] == 8``) are accepted."""
    try:
        tree = _parse_expression(text, "shape guard")
    except ValueError as exc:
        return str(exc)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            ok = node.id in GUARD_NAMES
        elif isinstance(node, ast.Attribute):
            ok = node.attr in GUARD_ATTRS
        elif isinstance(node, ast.Call):
            ok = not node.keywords and not any(isinstance(a, ast.Starred) for a in node.args)
        elif isinstance(node, ast.Subscript):
            ok = isinstance(node.slice, ast.Constant)
        elif isinstance(node, ast.Constant):
            value = node.value  # strings only as subscripts: L['x']; they end up inside a quoted message
            ok = bool(_IDENTIFIER.fullmatch(value)) if isinstance(value, str) else _constant_ok(value)
        else:
            ok = isinstance(node, (ast.Expression, ast.UnaryOp, ast.BinOp, ast.BoolOp, ast.Compare, ast.IfExp,
                                   *_OPERATOR_NODES))
        if not ok:
            return f"has a shape guard that is not a comparison of input sizes: {shown(text)}"
    return None
