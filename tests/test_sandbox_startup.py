"""The sandboxed child checks an ONNX model with onnx's protobuf classes alone: the onnx package's
import (ml_dtypes) would cost every sandbox start 0.6-0.8 CPU-s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

EXAMPLE = Path(__file__).resolve().parents[1] / "submissions" / "example"

CHECK = """
import json, sys
from harness.sandbox import loaders
from harness.errors import SubmissionFailure
loaders.import_runtime("onnx")
path, root = sys.argv[1], sys.argv[2]
try:
    result = loaders.check_onnx_model(path, root, 1, 64, 64)
    out = {"fixed_batch": result}
except SubmissionFailure as exc:
    out = {"kind": exc.kind, "message": exc.message}
out["onnx_imported"] = "onnx" in sys.modules or "ml_dtypes" in sys.modules
print(json.dumps(out))
"""


def _external(name: str, dims: list[int], location: str) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims, data_location=TensorProto.EXTERNAL)
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    return tensor


def _check(model_path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHECK, str(model_path), str(model_path.parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_example_model_is_checked_without_importing_onnx():
    model = json.loads((EXAMPLE / "submission.json").read_text())["model"]
    out = _check(EXAMPLE / model)
    assert out == {"fixed_batch": None, "onnx_imported": False}


def test_external_data_outside_the_submission_is_still_refused(tmp_path):
    weight = _external("W", [4096, 2], "../outside.bin")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["images"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"])],
        "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2])], [weight])
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "encoder.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = _check(path)
    assert out["kind"] == "load_error" and "outside the submission folder" in out["message"]
    assert out["onnx_imported"] is False


def test_a_subgraph_initializer_with_external_data_is_found(tmp_path):
    inner_weight = _external("V", [1], "/etc/passwd")
    branch = helper.make_graph([helper.make_node("Identity", ["V"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])], [inner_weight])
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0),
         helper.make_node("Greater", ["m", "zero"], ["c"]),
         helper.make_node("If", ["c"], ["z"], then_branch=branch, else_branch=branch)],
        "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 1, 64, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], vals=[0.0])])
    path = tmp_path / "encoder.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    out = _check(path)
    assert out["kind"] == "load_error" and "/etc/passwd" in out["message"]


def test_onnx_still_imports_after_the_private_load():
    """Backend "none" runs in the caller's process, which may import onnx after the check."""
    model = json.loads((EXAMPLE / "submission.json").read_text())["model"]
    code = CHECK + "\nimport onnx\nprint(len(onnx.load(sys.argv[1]).graph.node))\n"
    proc = subprocess.run([sys.executable, "-c", code, str(EXAMPLE / model), str(EXAMPLE)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) > 0
    assert onnx.__version__  # the test process's own onnx is untouched
