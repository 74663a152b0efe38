"""Containment of model files that carry code where none should be (issue #19, classes 1 and 9).

Class 1: a .pt2 is JSON that torch turns into Python. A parameter renamed to
``__class__"),exec(...),getattr(self,"__class__`` is pasted into ``getattr(self, "<name>")`` by
torch.fx; ``expr_str`` goes to sympy.sympify (eval) while loading; ``guards_code`` is exec'd by
``program.module()``; pytree specs import modules by name; AOTInductor packages are shared libraries.
The parent refuses them (harness.submission.formats) and so does the child on its own
(harness.sandbox.loaders), each checked here with the other out of the way.

Class 9: an ONNX model-local function named ("com.microsoft", "Gelu") passed the domain allowlist,
and onnxruntime ran its contrib kernel instead of the function's body.
"""

import json
import math
import os
import zipfile

import numpy as np
import pytest

from harness import pt2_rules
from harness.errors import SubmissionFailure
from harness.sandbox import Limits, loaders, open_encoder
from harness.submission import formats, load
import hostile

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

FAST = Limits(wall_seconds=60, load_wall_seconds=120, memory_mb=4096, threads=1)


@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """One real .pt2 (torch.export of a Linear) per module; the hostile ones are edits of it."""
    return hostile.torch_export_linear(tmp_path_factory.mktemp("linear") / "sub")


def _program_edit(change):
    def edit(rel, doc):
        if rel.startswith("models/"):
            change(doc)
        return doc
    return edit


def _renamed(marker):
    payload = hostile.fx_codegen_payload(marker)
    return lambda rel, doc: hostile.rename_everywhere(doc, "lin.weight", payload)


def _guard(marker):
    return _program_edit(lambda doc: doc.__setitem__("guards_code", [f"open({str(marker)!r}, 'w') is None"]))


def _sympy(marker):
    def change(doc):
        size = doc["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]
        size["expr_str"] = f"Symbol('s0', positive=True, integer=True) + 0*len(str(open({str(marker)!r}, 'w')))"
    return _program_edit(change)


def _spec_import(marker):
    def change(doc):
        signature = doc["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["children_spec"][1]["context"] = json.dumps([{"__enum__": True, "fqn": "this:s", "name": "x"}])
        signature["in_spec"] = json.dumps(spec)
    return _program_edit(change)


def _argument_name(marker):
    def change(doc):
        doc["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = [
            f"x=open({str(marker)!r}, 'w')"]
    return _program_edit(change)


# name, edit(marker), extra members, words the parent's and the child's messages hold
CODE_VECTORS = [
    ("parameter name", _renamed, None, "dotted python identifier"),
    ("guard", _guard, None, "shape guard"),
    ("sympy expression", _sympy, None, "symbolic shape"),
    ("module import in a spec", _spec_import, None, ""),
    ("argument name", _argument_name, None, "argument name"),
    ("AOTInductor package", lambda marker: (lambda rel, doc: doc), {"data/aotinductor/model/x.so": b"\x7fELF"},
     "aotinductor"),
]


def _crafted(linear, tmp_path, vector, marker):
    name, edit, extra, words = vector
    return hostile.edit_pt2(linear, tmp_path / name.replace(" ", "_"), edit(marker), extra=extra), words


def _child_load(folder):
    """load_model as the sandboxed child runs it, in this process: no parent check before it."""
    return loaders.load_model(fmt="torch_export", path=os.path.join(folder, "encoder.pt2"), root=str(folder),
                              threads=1, device="cpu", num_outputs=1, input_shape=(1, hostile.SIDE, hostile.SIDE))


def _one_line(failure, *words):
    text = failure.message
    assert "\n" not in text and len(text) < 400, text
    assert all(c.isprintable() for c in text), text
    for w in words:
        assert w.lower() in text.lower(), text


# --- class 1: the attack is real --------------------------------------------------------------------

def test_renamed_parameter_runs_code_in_stock_torch(linear, tmp_path):
    """torch 2.13 without harness: load, module() and a call run the payload in the parameter's name."""
    import torch

    marker = tmp_path / "payload-ran"
    folder = hostile.edit_pt2(linear, tmp_path / "s", _renamed(marker))
    program = torch.export.load(os.path.join(folder, "encoder.pt2"))
    module = program.module()
    assert 'exec("open(' in module.code  # the name went into the generated source unescaped
    with pytest.raises(Exception):
        module(torch.zeros(2, 1, hostile.SIDE, hostile.SIDE))  # the tuple getattr(...),exec(...) is no weight
    assert marker.exists()


def test_sympy_expression_runs_code_in_stock_torch_while_loading(linear, tmp_path):
    import torch

    marker = tmp_path / "payload-ran"
    folder = hostile.edit_pt2(linear, tmp_path / "s", _sympy(marker))
    with pytest.raises(Exception):
        torch.export.load(os.path.join(folder, "encoder.pt2"))
    assert marker.exists()  # evaluated by sympify before torch noticed anything wrong


# --- class 1: refused by the parent, and by the child on its own ----------------------------------

@pytest.mark.parametrize("vector", CODE_VECTORS, ids=[v[0] for v in CODE_VECTORS])
def test_parent_refuses_code_in_a_pt2(linear, tmp_path, vector):
    marker = tmp_path / "payload-ran"
    folder, words = _crafted(linear, tmp_path, vector, marker)
    with pytest.raises(SubmissionFailure) as info:
        load(folder)
    assert info.value.kind == "invalid_submission"
    _one_line(info.value, "encoder.pt2", words)
    assert not marker.exists()


@pytest.mark.parametrize("vector", CODE_VECTORS, ids=[v[0] for v in CODE_VECTORS])
def test_child_refuses_code_in_a_pt2_without_the_parent_check(linear, tmp_path, vector):
    marker = tmp_path / "payload-ran"
    folder, words = _crafted(linear, tmp_path, vector, marker)
    with pytest.raises(SubmissionFailure) as info:
        _child_load(folder)
    assert info.value.kind == "invalid_submission", info.value
    _one_line(info.value, words)
    assert not marker.exists()


def test_child_refuses_a_renamed_parameter_through_the_sandbox(linear, tmp_path, monkeypatch):
    marker = tmp_path / "payload-ran"
    folder = hostile.edit_pt2(linear, tmp_path / "s", _renamed(marker))
    monkeypatch.setattr(formats, "check_pt2", lambda path, rel: None)  # the parent check out of the way
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(folder), limits=FAST) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "invalid_submission", info.value
    _one_line(info.value, "dotted python identifier", "__class__")
    assert not marker.exists()


def test_bad_names_are_shown_sanitized_and_short(linear, tmp_path):
    name = "w\x1b[2J\r\n" + "x" * 500
    folder = hostile.edit_pt2(linear, tmp_path / "s", lambda rel, doc: hostile.rename_everywhere(doc, "lin.weight",
                                                                                                 name))
    with pytest.raises(SubmissionFailure) as info:
        load(folder)
    _one_line(info.value, "w?[2J??xxx")
    assert "x" * 61 not in info.value.message


def test_validate_reports_the_renamed_parameter(linear, tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    marker = tmp_path / "payload-ran"
    folder = hostile.edit_pt2(linear, tmp_path / "s", _renamed(marker))
    res = CliRunner().invoke(cli, ["validate", str(folder), "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.output)
    assert report["failure"]["kind"] == "invalid_submission"
    assert "dotted Python identifier" in report["failure"]["message"]
    assert not marker.exists()


# --- class 1: the checks themselves --------------------------------------------------------------------

def test_node_targets_outside_aten_are_refused():
    import operator

    import torch

    ok = [torch.ops.aten.linear.default, torch.ops.higher_order.cond, operator.getitem, torch.sym_max]
    assert [loaders._callable_problem(t) for t in ok] == [None] * len(ok)
    for target in (torch.ops.higher_order.flat_apply, torch.ops.higher_order.invoke_leaf_function,
                   torch.ops.profiler._record_function_enter_new.default, os.system, print, lambda x: x):
        assert "not an ATen operator" in loaders._callable_problem(target)
    assert formats.op_target_problem("torch.ops.aten.linear.default") is None
    assert formats.op_target_problem("torch.ops.aten._native_batch_norm_legit_no_training.default") is None
    for target in ("torch.os.system", "torch.ops.higher_order.flat_apply", "torch.ops.aten.__class__.__init__",
                   "torch.ops.profiler._record_function_enter_new.default", "#custom:op", "builtins.exec"):
        assert "not an ATen operator" in formats.op_target_problem(target), target


def test_expression_grammars():
    good_sympy = ["Symbol('s77', positive=True, integer=True)", "Mul(Integer(2), Symbol('s65', integer=True))",
                  "Float('1.5', precision=53)", "FloorDiv(Symbol('s0'), Integer(2)) + 1", "-oo", "s0 + 1"]
    bad_sympy = ["__import__('os').system('x')", "Symbol('s0').__class__", "sympify('1')", "eval('1')",
                 "Symbol(*['a'])", "Integer(1)[0]", "(lambda: 1)()", "x" * 5000]
    good_guards = ["L['y'].size()[0] == L['x'].size()[0]", "L['x'].size()[0] % 2 == 0",
                   "math.floor(L['x'].size()[0] / 2) >= 3", "2 <= L['x'].size()[0] and L['x'].size()[0] <= 9"]
    bad_guards = ["open('/tmp/x', 'w') is None", "torch.save(1, 'x') is None", "L['x'].__class__",
                  "L['x\")'].size()[0] == 1", "L['x'].size(dim=0) == 1", "(L['x'], 1)[0]"]
    for text in good_sympy:
        assert pt2_rules.sympy_expression_problem(text) is None, text
    for text in bad_sympy:
        assert pt2_rules.sympy_expression_problem(text), text
    for text in good_guards:
        assert pt2_rules.guard_problem(text) is None, text
    for text in bad_guards:
        assert pt2_rules.guard_problem(text), text


def test_child_and_parent_use_the_same_rules():
    """The parent's JSON check and the child's loaded-program check apply harness.pt2_rules itself
    (the child gets a copy of the module), not lists or checks of their own."""
    shared = ["shown", "is_identifier", "is_dotted_name", "spec_key_ok", "sympy_expression_problem",
              "guard_problem"]
    for name in shared + ["TREESPEC_TYPES", "op_target_problem"]:
        assert getattr(formats, name) is getattr(pt2_rules, name), name
    for name in shared + ["OP_NAMESPACES", "HIGHER_ORDER_OPS", "PYTHON_OPS", "not_an_operator"]:
        assert getattr(loaders, name) is getattr(pt2_rules, name), name


def _replace_member(linear, dest, rel_name, data, *, duplicate=False):
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(os.path.join(linear, "encoder.pt2")) as zf:
        entries = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
    with zipfile.ZipFile(os.path.join(dest, "encoder.pt2"), "w") as zf:
        for n, old in entries:
            if n.endswith("/" + rel_name):
                if duplicate:
                    zf.writestr(n, old)
                zf.writestr(n, data)
            else:
                zf.writestr(n, old)
    return os.path.join(dest, "encoder.pt2")


def test_json_nested_100000_deep_is_refused_without_parsing(linear, tmp_path):
    path = _replace_member(linear, tmp_path / "s", "models/model.json", b"[" * 100_000 + b"]" * 100_000)
    assert formats.json_depth("[" * 100_000 + "]" * 100_000) == 100_000
    assert "nests deeper" in formats.pt2_problem(path)
    with pytest.raises(SubmissionFailure) as info:  # torch's own json.loads in the child fails cleanly
        _child_load(tmp_path / "s")
    assert info.value.kind in ("load_error", "invalid_submission")


def test_brackets_inside_json_strings_do_not_count():
    assert formats.json_depth('{"a": "[[[[{{{{\\"]]]]", "b": [1, [2]]}') == 3


def test_oversized_json_member_is_refused_before_reading(linear, tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "MAX_JSON_BYTES", 1024)
    problem = formats.pt2_problem(os.path.join(linear, "encoder.pt2"))
    assert "JSON members are limited" in problem


def test_duplicate_members_are_refused(linear, tmp_path):
    evil = json.dumps({"config": {"x'": {"path_name": "weight_0"}}}).encode()
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _replace_member(linear, tmp_path / "s", "data/weights/model_weights_config.json", evil,
                               duplicate=True)
    assert "twice" in formats.pt2_problem(path)


def test_members_outside_the_archive_folder_are_refused(linear, tmp_path):
    path = os.path.join(hostile.edit_pt2(linear, tmp_path / "s", lambda rel, doc: doc), "encoder.pt2")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("other/models/model.json", "{}")
    assert "more than one top-level folder" in formats.pt2_problem(path)


def test_non_tensor_inputs_and_custom_constants_are_refused(linear, tmp_path):
    def string_input(doc):
        doc["graph_module"]["graph"]["inputs"].append({"as_string": "a' or open('x', 'w') or '"})

    def custom_constant(rel, doc):
        if rel.startswith("data/constants/"):
            doc["config"]["k"] = {"path_name": "custom_obj_0", "is_param": False, "use_pickle": False,
                                  "tensor_meta": None}
        return doc

    folder = hostile.edit_pt2(linear, tmp_path / "a", _program_edit(string_input))
    assert "non-tensor input" in formats.pt2_problem(os.path.join(folder, "encoder.pt2"))
    folder = hostile.edit_pt2(linear, tmp_path / "b", custom_constant)
    assert "not a tensor" in formats.pt2_problem(os.path.join(folder, "encoder.pt2"))


# --- class 1: good programs still load and encode the same ------------------------------------------

def test_good_pt2s_pass_both_checks_and_encode_as_before(linear, tmp_path):
    import torch

    x = hostile.images(7)
    plain = hostile.torch_export(tmp_path / "plain")  # the existing builder: x.flatten(1)[:, :LATENT] * 2
    expected_plain = x.astype(np.float32).transpose(0, 3, 1, 2).reshape(7, -1)[:, :hostile.LATENT] / 255 * 2
    program = torch.export.load(os.path.join(linear, "encoder.pt2"))
    with torch.no_grad():
        expected_linear = program.module()(torch.from_numpy(x.astype(np.float32).transpose(0, 3, 1, 2) / 255))
    for folder, expected in ((plain, expected_plain), (linear, expected_linear.numpy())):
        assert formats.pt2_problem(os.path.join(folder, "encoder.pt2")) is None
        assert loaders.pt2_program_problem(torch.export.load(os.path.join(folder, "encoder.pt2"))) is None
        with open_encoder(load(folder), limits=FAST) as enc:
            np.testing.assert_allclose(enc.encode(x), expected, rtol=1e-5, atol=1e-6)


def test_programs_with_buffers_submodules_and_control_flow_pass(tmp_path):
    """nn.Sequential indexes (enc.0.weight), buffers, a constant, no_grad and torch.cond: no false alarms."""
    import torch
    from torch import nn

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU())
            self.head = nn.ModuleDict({"mu": nn.Linear(2 * hostile.SIDE ** 2, hostile.LATENT)})
            self.register_buffer("scale", torch.ones(hostile.LATENT))

        def forward(self, x):
            h = self.enc(x).view(x.shape[0], -1)
            with torch.no_grad():
                h = h * 1.0
            z = torch.cond(h.sum() > 0, lambda h: self.head["mu"](h), lambda h: self.head["mu"](-h), (h,))
            return {"mean": z * self.scale}

    ep = torch.export.export(Enc().eval(), (torch.rand(3, 1, hostile.SIDE, hostile.SIDE),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1 << 20)}})
    path = str(tmp_path / "encoder.pt2")
    torch.export.save(ep, path)
    assert formats.pt2_problem(path) is None
    forward, _ = loaders.load_model(fmt="torch_export", path=path, root=str(tmp_path), threads=1, device="cpu",
                                    num_outputs=1, input_shape=(1, hostile.SIDE, hostile.SIDE))
    assert forward(np.zeros((2, 1, hostile.SIDE, hostile.SIDE), np.float32))[0].shape == (2, hostile.LATENT)


# --- class 9: ONNX local functions in runtime-owned domains ------------------------------------------

def _check(folder):
    loaders.check_onnx_model(os.path.join(folder, "encoder.onnx"), str(folder), 1, hostile.SIDE, hostile.SIDE)


def test_contrib_named_local_function_runs_the_contrib_kernel_in_stock_onnxruntime(tmp_path):
    import onnxruntime as ort

    folder = hostile.onnx_local_function(tmp_path / "s", domain="com.microsoft", name="Gelu")
    x = hostile.images(3)
    sess = ort.InferenceSession(os.path.join(folder, "encoder.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": x.astype(np.float32).transpose(0, 3, 1, 2) / 255})[0]
    z = hostile.expected_codes(x)  # what the function's body (Identity) returns
    assert not np.allclose(out, z, atol=1e-3)
    gelu = 0.5 * z * (1 + np.vectorize(math.erf)(z / np.sqrt(2)))
    np.testing.assert_allclose(out, gelu, atol=1e-4)


@pytest.mark.parametrize("domain,name", [("com.microsoft", "Gelu"), ("org.pytorch.aten", "ATen")])
def test_local_function_in_a_runtime_domain_is_refused_in_the_sandbox(tmp_path, domain, name):
    folder = hostile.onnx_local_function(tmp_path / "s", domain=domain, name=name)
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(folder), limits=FAST) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "load_error", info.value
    _one_line(info.value, domain, "domain of your own")


@pytest.mark.parametrize("domain", ["", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training", "com.microsoft.nchwc",
                                    "com.ms.internal.nhwc", "COM.Microsoft", "org.pytorch.aten"])
def test_every_reserved_domain_is_refused_for_local_functions(tmp_path, domain):
    folder = hostile.onnx_local_function(tmp_path / "s", domain=domain, name="Relu")
    with pytest.raises(SubmissionFailure) as info:
        _check(folder)
    assert info.value.kind == "load_error" and "local function" in info.value.message


def test_contrib_node_inside_a_local_functions_subgraph_is_refused(tmp_path):
    folder = hostile.onnx_local_function(tmp_path / "s", domain="custom.fn", name="Gelu",
                                         nested_domain="com.microsoft")
    with pytest.raises(SubmissionFailure) as info:
        with open_encoder(load(folder), limits=FAST) as enc:
            enc.encode(hostile.images(2))
    assert info.value.kind == "load_error", info.value
    _one_line(info.value, "com.microsoft")


def test_legit_local_function_in_its_own_domain_still_works(tmp_path):
    folder = hostile.onnx_local_function(tmp_path / "s", domain="custom.fn", name="Gelu", depth=2)
    x = hostile.images(5)
    with open_encoder(load(folder), limits=FAST) as enc:
        np.testing.assert_allclose(enc.encode(x), hostile.expected_codes(x), atol=1e-4)


def test_subgraph_depth_and_node_count_are_bounded(tmp_path, monkeypatch):
    folder = hostile.onnx_local_function(tmp_path / "s", domain="custom.fn", depth=6)
    _check(folder)
    monkeypatch.setattr(loaders, "MAX_ONNX_SUBGRAPH_DEPTH", 4)
    with pytest.raises(SubmissionFailure, match="nests subgraphs"):
        _check(folder)
    monkeypatch.setattr(loaders, "MAX_ONNX_SUBGRAPH_DEPTH", 64)
    monkeypatch.setattr(loaders, "MAX_ONNX_NODES", 10)
    with pytest.raises(SubmissionFailure, match="more than 10 nodes"):
        _check(folder)


def test_validate_reports_the_contrib_function(tmp_path):
    from click.testing import CliRunner

    from harness.cli import cli

    folder = hostile.onnx_local_function(tmp_path / "s", domain="com.microsoft", name="Gelu")
    res = CliRunner().invoke(cli, ["validate", str(folder), "--json"])
    assert res.exit_code == 1, res.output
    failure = json.loads(res.output)["failure"]
    assert failure["kind"] == "load_error" and "com.microsoft" in failure["message"]
