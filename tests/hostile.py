"""Builders of good and hostile submissions for the submission/sandbox/adversarial tests.

ONNX models are written with onnx.helper (no torch, milliseconds); TorchScript and .pt2 models
with torch (imported lazily). Every builder writes a folder with submission.json and returns it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
import zipfile

import numpy as np

LATENT = 4
SIDE = 8  # small images keep the tests fast; the manifest declares them


def manifest(**overrides) -> dict:
    m = {"name": "test-model", "format": "onnx", "model": "encoder.onnx",
         "input": {"channels": 1, "height": SIDE, "width": SIDE}, "latent_dim": LATENT, "outputs": ["mean"]}
    m.update(overrides)
    return m


def write_manifest(folder, m) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "submission.json"), "w") as fh:
        fh.write(m if isinstance(m, str) else json.dumps(m))
    return str(folder)


def projection(channels=1, latent=LATENT, side=SIDE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels * side * side, latent)).astype(np.float32)


def expected_codes(images_nhwc_uint8, channels=1, latent=LATENT, side=SIDE, seed=0) -> np.ndarray:
    """What the linear ONNX encoder computes, in numpy (for checking values through the sandbox)."""
    x = images_nhwc_uint8.astype(np.float32) / 255.0
    if x.shape[-1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    return x @ projection(channels, latent, side, seed)


# --- ONNX ---------------------------------------------------------------------------------------

def onnx_linear(path, *, channels=1, latent=LATENT, side=SIDE, logvar=False, tail=None, domain="",
                batch="N", external_location=None):
    """A linear encoder: Flatten -> MatMul (-> tail op). ``tail`` makes it hostile:
    "nan" adds NaN, "shape" returns (N, D, 1), "double" casts to float64, "wide" returns D+1 dims."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = projection(channels, latent, side)
    w_init = numpy_helper.from_array(w, "W")
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["z"], domain=domain)]
    inits = [w_init]
    out_type = TensorProto.FLOAT
    last = "z"
    if tail == "nan":
        inits.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nanv"))
        nodes.append(helper.make_node("Add", ["z", "nanv"], ["mean"]))
    elif tail == "shape":
        inits.append(numpy_helper.from_array(np.array([-1, latent, 1], np.int64), "shp"))
        nodes.append(helper.make_node("Reshape", ["z", "shp"], ["mean"]))
    elif tail == "double":
        nodes.append(helper.make_node("Cast", ["z"], ["mean"], to=TensorProto.DOUBLE))
        out_type = TensorProto.DOUBLE
    elif tail == "wide":
        nodes.append(helper.make_node("Concat", ["z", "z"], ["mean"], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [last], ["mean"]))
    outputs = [helper.make_tensor_value_info("mean", out_type, None)]
    if logvar:
        inits.append(numpy_helper.from_array(np.full((1, latent), -1.0, np.float32), "lv"))
        nodes.append(helper.make_node("Mul", ["z", "lv"], ["logvar"]))
        outputs.append(helper.make_tensor_value_info("logvar", TensorProto.FLOAT, [batch, latent]))
    graph = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             [batch, channels, side, side])],
                              outputs, inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    if external_location is not None:
        from onnx import external_data_helper

        external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True,
                                                            location="weights.bin", size_threshold=0)
        onnx.save(model, path)
        # point the tensor's data somewhere else, as a hostile file would
        model = onnx.load(path, load_external_data=False)
        for t in model.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = external_location
        onnx.save(model, path)
        return path
    onnx.save(model, path)
    return path


def onnx_forever(folder) -> str:
    """An ONNX model whose Loop runs ~10^15 iterations before producing the code."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _mk(folder)
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    inits = [numpy_helper.from_array(np.array(10**15, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(projection(), "W")]
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"]),
             helper.make_node("Loop", ["trips", "cond", "z"], ["mean"], body=body)]
    graph = helper.make_graph(nodes, "forever", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["N", 1, SIDE, SIDE])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, os.path.join(folder, "encoder.onnx"))
    return write_manifest(folder, manifest())


def good_onnx(folder, *, channels=1, logvar=False, side=SIDE, latent=LATENT, name="test-model", **kw) -> str:
    _mk(folder)
    onnx_linear(os.path.join(folder, "encoder.onnx"), channels=channels, logvar=logvar, side=side, latent=latent,
                **kw)
    return write_manifest(folder, manifest(name=name, input={"channels": channels, "height": side, "width": side},
                                           latent_dim=latent, outputs=["mean", "logvar"] if logvar else ["mean"]))


def _mk(folder) -> bool:
    os.makedirs(folder, exist_ok=True)
    return True


def images(n, *, channels=1, side=SIDE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, channels), dtype=np.uint8)


# --- TorchScript --------------------------------------------------------------------------------

TORCHSCRIPT_SOURCES = {
    # each class's forward(x) must return (N, LATENT) unless it is hostile on purpose
    "good": "return x.flatten(1)[:, :{latent}] * 2.0",
    "read_file": "t = torch.from_file({path!r}, shared=False, size={size}, dtype=torch.uint8)\n"
                 "        return x.flatten(1)[:, :{latent}] * 0.0 + t.float().sum()",
    "write_file": "torch.save(x, {path!r})\n        return x.flatten(1)[:, :{latent}]",
    "alloc": "big = torch.ones({numel}, dtype=torch.float32)\n"
             "        return x.flatten(1)[:, :{latent}] + big[0]",
    "loop": "i = 0\n        while i >= 0:\n            i = (i + 1) % 1000\n        return x.flatten(1)[:, :{latent}]",
    "print": "line = '" + "x" * 1000 + "'\n        for i in range({lines}):\n            print(line)\n"
             "        return x.flatten(1)[:, :{latent}]",
    "raise": "raise RuntimeError('deliberate failure in forward')",
    # an OSC escape (retitles the terminal) and a fake verdict line in the exception text
    "raise_escapes": "raise RuntimeError(chr(27) + ']0;pwned' + chr(7) + chr(10) + 'VALID: all good' + chr(27) + '[2J')",
    "fill_scratch": "for i in range({files}):\n            torch.save(torch.zeros({numel}), 'fill' + str(i) + '.pt')\n"
                    "        return x.flatten(1)[:, :{latent}]",
}


def torchscript(folder, kind="good", *, fmt_name="encoder.pt", **params) -> str:
    """A scripted module whose forward runs TORCHSCRIPT_SOURCES[kind] (TorchScript is code)."""
    import torch

    body = TORCHSCRIPT_SOURCES[kind].format(latent=LATENT, **params)
    src = (f"import torch\nclass M(torch.nn.Module):\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
           f"        {body}\n")
    ns: dict = {}
    _mk(folder)
    src_path = os.path.join(folder, "_src.py")  # torch.jit.script needs inspectable source
    with open(src_path, "w") as fh:
        fh.write(src)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hostile_{kind}_{abs(hash(folder))}", src_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ns["M"] = mod.M
    torch.jit.save(torch.jit.script(ns["M"]()), os.path.join(folder, fmt_name))
    os.remove(src_path)
    return write_manifest(folder, manifest(format="torchscript", model=fmt_name))


# --- pickles (must never run) -----------------------------------------------------------------------

class Payload:
    """Unpickling this creates ``marker`` (a stand-in for any code a pickle can run)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_module(folder, marker, *, fmt="torchscript", name="encoder.pt") -> str:
    """A torch.save'd object whose unpickling would create ``marker``."""
    import torch

    _mk(folder)
    torch.save({"model": Payload(marker)}, os.path.join(folder, name))
    return write_manifest(folder, manifest(format=fmt, model=name))


def raw_pickle(folder, marker, *, fmt="torchscript", name="encoder.pt") -> str:
    _mk(folder)
    with open(os.path.join(folder, name), "wb") as fh:
        pickle.dump(Payload(marker), fh)
    return write_manifest(folder, manifest(format=fmt, model=name))


def torch_export(folder, *, name="encoder.pt2") -> str:
    import torch

    class Enc(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :LATENT] * 2.0

    _mk(folder)
    ep = torch.export.export(Enc(), (torch.zeros(2, 1, SIDE, SIDE),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1 << 20)}})
    torch.export.save(ep, os.path.join(folder, name))
    return write_manifest(folder, manifest(format="torch_export", model=name))


def hostile_pt2(folder, marker, *, name="encoder.pt2") -> str:
    """A valid .pt2 whose weights are declared pickled: torch.export.load would torch.load them
    with weights_only=False, running the payload (harness forces weights_only=True)."""
    torch_export(folder, name=name)
    path = os.path.join(folder, name)
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    prefix = next(n for n in entries if n.endswith("model_weights_config.json")).rsplit("/", 1)[0]
    import torch

    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    entries[f"{prefix}/model_weights_config.json"] = json.dumps(
        {"config": {"w": {"path_name": "weight_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}}
    ).encode()
    entries[f"{prefix}/weight_0"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    return folder


# --- archives -----------------------------------------------------------------------------------

def zip_folder(folder, dest) -> str:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, _, files in os.walk(folder):
            for f in files:
                full = os.path.join(dirpath, f)
                zf.write(full, os.path.relpath(full, folder))
    return str(dest)


def tar_folder(folder, dest, *, arcname="") -> str:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(folder, arcname=arcname or ".")
    return str(dest)


def zip_with_member(dest, member_name, data=b"x", *, symlink_to=None, good_folder=None) -> str:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        if good_folder:
            for f in os.listdir(good_folder):
                zf.write(os.path.join(good_folder, f), f)
        info = zipfile.ZipInfo(member_name)
        if symlink_to is not None:
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, symlink_to)
        else:
            zf.writestr(info, data)
    return str(dest)


def tar_with_member(dest, member_name, *, kind="file", linkname="/etc/passwd", good_folder=None) -> str:
    with tarfile.open(dest, "w:gz") as tf:
        if good_folder:
            for f in os.listdir(good_folder):
                tf.add(os.path.join(good_folder, f), arcname=f)
        info = tarfile.TarInfo(member_name)
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tf.addfile(info)
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, linkname
            tf.addfile(info)
        elif kind == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(info)
        else:
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    return str(dest)


def zip_bomb(dest, *, megabytes=64, good_folder=None) -> str:
    """A zip whose one member inflates ~1000x (zeros)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        if good_folder:
            for f in os.listdir(good_folder):
                zf.write(os.path.join(good_folder, f), f)
        with zf.open("padding.bin", "w", force_zip64=True) as fh:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                fh.write(block)
    return str(dest)


# --- containment: .pt2 JSON and ONNX local functions (tests/test_containment_models.py) -----------

def torch_export_linear(folder, *, name="encoder.pt2") -> str:
    """A .pt2 of a Linear encoder: its parameter names (lin.weight, lin.bias) reach the Python
    that torch.fx generates when the program is turned back into a module."""
    import torch

    torch.manual_seed(0)

    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(SIDE * SIDE, LATENT)

        def forward(self, x):
            return self.lin(x.flatten(1))

    _mk(folder)
    ep = torch.export.export(Enc(), (torch.zeros(2, 1, SIDE, SIDE),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", max=1 << 20)}})
    torch.export.save(ep, os.path.join(folder, name))
    return write_manifest(folder, manifest(format="torch_export", model=name))


def edit_pt2(src_folder, dest_folder, edit, *, name="encoder.pt2", extra=None) -> str:
    """Copy a .pt2 submission, passing each JSON member through ``edit(rel, doc)`` (``rel`` without
    the archive's top folder; return the new document) and adding ``extra`` {rel: bytes} members."""
    _mk(dest_folder)
    with zipfile.ZipFile(os.path.join(src_folder, name)) as zf:
        entries = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    top = next(iter(entries)).split("/", 1)[0]
    for n, data in entries.items():
        if n.endswith(".json"):
            entries[n] = json.dumps(edit(n[len(top) + 1:], json.loads(data))).encode()
    for rel, data in (extra or {}).items():
        entries[f"{top}/{rel}"] = data
    with zipfile.ZipFile(os.path.join(dest_folder, name), "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    with open(os.path.join(src_folder, "submission.json")) as fh:
        return write_manifest(dest_folder, fh.read())


def rename_everywhere(doc, old: str, new: str):
    """``doc`` with every dict key and string value equal to ``old`` replaced by ``new``: the
    consistent rename of a parameter across a .pt2's JSON members."""
    if isinstance(doc, dict):
        return {(new if k == old else k): rename_everywhere(v, old, new) for k, v in doc.items()}
    if isinstance(doc, list):
        return [rename_everywhere(v, old, new) for v in doc]
    return new if doc == old else doc


def fx_codegen_payload(marker) -> str:
    """A parameter name that torch.fx pastes into ``getattr(self, "<name>")``: creates ``marker``."""
    return f'__class__"),exec("open({str(marker)!r},\'w\').close()"),getattr(self,"__class__'


def onnx_local_function(folder, *, domain, name="Gelu", nested_domain=None, depth=0) -> str:
    """The linear encoder with a model-local function ``(domain, name)`` applied to its codes; the
    function's body is Identity, so a sandbox that runs the body reproduces expected_codes.

    ``nested_domain``: the body instead holds an If whose then-branch calls ``nested_domain``'s
    ``name`` op (a node hidden in a function's subgraph). ``depth``: the function's call is wrapped
    in that many nested If subgraphs of the main graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _mk(folder)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)]
    if nested_domain is None:
        body = [helper.make_node("Identity", ["X"], ["Y"])]
    else:
        opsets.append(helper.make_opsetid(nested_domain, 1))
        then = helper.make_graph([helper.make_node(name, ["X"], ["T"], domain=nested_domain)], "then", [],
                                 [helper.make_tensor_value_info("T", TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Identity", ["X"], ["E"])], "else", [],
                                  [helper.make_tensor_value_info("E", TensorProto.FLOAT, None)])
        body = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True))),
                helper.make_node("If", ["c"], ["Y"], then_branch=then, else_branch=other)]
    fn = helper.make_function(domain, name, ["X"], ["Y"], body, opset_imports=opsets)
    call = helper.make_node(name, ["z"], ["mean" if depth == 0 else "fz0"], domain=domain)
    for level in range(depth):  # If(true) { previous } else { Identity }
        inner = helper.make_graph([call], f"then{level}", [],
                                  [helper.make_tensor_value_info(call.output[0], TensorProto.FLOAT, None)])
        other = helper.make_graph([helper.make_node("Identity", ["z"], [f"e{level}"])], f"else{level}", [],
                                  [helper.make_tensor_value_info(f"e{level}", TensorProto.FLOAT, None)])
        call = helper.make_node("If", ["cond"], ["mean" if level == depth - 1 else f"fz{level + 1}"],
                                then_branch=inner, else_branch=other)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "W"], ["z"]),
             call]
    inits = [numpy_helper.from_array(projection(), "W")] + ([numpy_helper.from_array(np.array(True), "cond")]
                                                            if depth else [])
    graph = helper.make_graph(nodes, "enc", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                             ["N", 1, SIDE, SIDE])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=opsets, functions=[fn])
    model.ir_version = 8
    onnx.save(model, os.path.join(folder, "encoder.onnx"))
    return write_manifest(folder, manifest())
