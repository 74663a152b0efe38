"""Export an encoder as a submission (DESIGN 3.1) in any of the three formats, and verify it.

``export_encoder(module, out, input_shape=(C, H, W))`` takes any ``nn.Module`` mapping float32 NCHW
images in [0, 1] to the mean code (or to ``(mean, logvar)``); ``export_checkpoint(path, out)`` does the
same for a ``harness train`` checkpoint. Both write the model file and ``submission.json`` and then
check the result before returning:

1. the exported model, loaded back by its own runtime (onnxruntime, ``torch.jit.load``,
   ``torch.export.load``), matches the PyTorch module to ``atol`` (1e-4) on batches of 1, 3 and 16
   (so the batch axis really is dynamic);
2. ``harness.submission.load`` accepts the folder (manifest schema, files, no pickles), and, when
   ``harness.sandbox.validate`` is available, the sandboxed validation passes too.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.errors import InputError, SubmissionFailure

MODEL_FILES = {"onnx": "encoder.onnx", "torchscript": "encoder.torchscript.pt", "torch_export": "encoder.pt2"}
FORMATS = tuple(MODEL_FILES)
VERIFY_BATCHES = (1, 3, 16)


@dataclass
class ExportResult:
    out: Path
    model_path: Path
    manifest_path: Path
    manifest: dict
    max_abs_diff: float
    validated_by: list
    seconds: float
    exporter: str


def export_encoder(encoder: nn.Module, out, *, input_shape, format: str = "onnx", name: str = "my-encoder",
                   with_logvar: bool = False, atol: float = 1e-4, seed: int = 0, validate: bool = True,
                   extra: dict | None = None, description: str | None = None) -> ExportResult:
    """Export ``encoder`` to ``out`` as a complete submission and verify it.

    Parameters
    ----------
    encoder : ``nn.Module``; ``forward(x)`` takes float32 ``(N, C, H, W)`` in [0, 1] and returns the
        code ``(N, D)``, or a tuple whose first two items are ``(mean, logvar)``.
    input_shape : ``(channels, height, width)`` the model expects (channels 1 or 3).
    format : ``onnx`` (single file, opset 18), ``torchscript`` (traced) or ``torch_export`` (.pt2).
    with_logvar : export ``(mean, logvar)`` and declare ``"outputs": ["mean", "logvar"]``.
    atol : largest allowed absolute difference between the exported model and ``encoder``.
    seed : seed of the random verification images.
    validate : also run ``harness.submission`` checks on the written folder.
    """
    from harness.baseline.models import MeanEncoder

    if format not in MODEL_FILES:
        raise InputError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    try:
        channels, height, width = (int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise InputError(f"input_shape must be (channels, height, width), got {input_shape!r}") from None
    if channels not in (1, 3) or height < 1 or width < 1:
        raise InputError(f"input_shape must have 1 or 3 channels and positive sizes, got {input_shape!r}")
    started = time.perf_counter()
    wrapper = MeanEncoder(encoder, with_logvar=with_logvar).cpu().eval()
    rng = np.random.default_rng(seed)
    probe = torch.from_numpy(rng.random((2, channels, height, width), dtype=np.float32))
    with torch.no_grad():
        try:
            reference = wrapper(probe)
        except InputError:
            raise
        except Exception as exc:  # the participant's module does not run on the declared input
            raise InputError(f"the encoder fails on a float32 batch of shape {tuple(probe.shape)}: {exc}") from None
    first = reference[0] if with_logvar else reference
    if first.ndim != 2 or first.shape[0] != 2:
        raise InputError(f"the encoder must return (N, D) codes, got shape {tuple(first.shape)}")
    latent_dim = int(first.shape[1])

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / MODEL_FILES[format]
    output_names = ["mean", "logvar"] if with_logvar else ["mean"]
    exporter = _EXPORTERS[format]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit / exporter deprecation chatter
        exporter_used = exporter(wrapper, probe, model_path, output_names)
    # One model per folder; our ONNX files never carry external data, so a .data file is stale too.
    for stale in (set(MODEL_FILES.values()) - {model_path.name}) | {MODEL_FILES["onnx"] + ".data"}:
        (out / stale).unlink(missing_ok=True)

    manifest = {"name": name, "format": format, "model": model_path.name,
                "input": {"channels": channels, "height": height, "width": width},
                "latent_dim": latent_dim, "outputs": output_names}
    if description:
        manifest["description"] = description
    if extra:
        manifest["extra"] = extra
    manifest_path = out / "submission.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")

    max_diff = verify_export(wrapper, model_path, format, (channels, height, width), with_logvar, atol=atol, seed=seed)
    validated_by = ["runtime_match"]
    if validate:
        validated_by += validate_submission(out)
    return ExportResult(out, model_path, manifest_path, manifest, max_diff, validated_by,
                        time.perf_counter() - started, exporter_used)


def export_checkpoint(checkpoint, out, *, format: str = "onnx", with_logvar: bool = False, name: str | None = None,
                      atol: float = 1e-4, validate: bool = True) -> ExportResult:
    """Export the encoder of a ``harness train`` checkpoint (``checkpoint.safetensors``) as a submission."""
    from harness.baseline.checkpoint import module_state, read_checkpoint
    from harness.baseline.models import ConvEncoder
    from harness.datasets import load

    meta, tensors = read_checkpoint(checkpoint)
    config = meta["config"]
    state = module_state(tensors, "encoder")
    # The first conv's weight is (32, C, 4, 4); the image size follows from the first linear layer.
    channels = int(state["features.0.weight"].shape[1])
    try:
        height, width, _ = load(config["dataset"], **config.get("dataset_options", {})).observation_shape
    except InputError:  # the training data moved: fall back to the square size the FC layer implies
        side = int(round((state["features.9.weight"].shape[1] / 64) ** 0.5)) * 16
        height = width = side
    encoder = ConvEncoder(channels, height, width, config["latent_dim"])
    encoder.load_state_dict(state)
    params = ", ".join(f"{k}={v}" for k, v in config["params"].items())
    return export_encoder(
        encoder, out, input_shape=(channels, height, width), format=format, with_logvar=with_logvar,
        name=name or f"{config['model']}-{config['dataset']}", atol=atol, validate=validate,
        description=f"{config['model']} ({params}) trained with harness train on {config['dataset']} "
                    f"for {meta['step']} steps (batch {config['batch_size']}, lr {config['lr']}, seed {config['seed']})",
        extra={"trained_with": "harness.baseline", "harness": meta.get("harness"), "model": config["model"],
               "params": config["params"], "dataset": config["dataset"], "steps": meta["step"],
               "batch_size": config["batch_size"], "lr": config["lr"], "seed": config["seed"],
               "weight_init": config.get("weight_init", "torch")})


def _export_onnx(wrapper, probe, path, output_names):
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    try:
        # The torch.export-based exporter (default since torch 2.9); one file, no external data.
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(wrapper, (probe,), str(path), dynamo=True, external_data=False,
                              input_names=["images"], output_names=output_names,
                              dynamic_shapes={"x": {0: batch}}, opset_version=18)
        return "torch.onnx.export(dynamo=True)"
    except Exception:  # noqa: BLE001 - e.g. data-dependent control flow: the TorchScript-based exporter may cope
        axes = {n: {0: "batch"} for n in ["images", *output_names]}
        torch.onnx.export(wrapper, (probe,), str(path), dynamo=False, input_names=["images"],
                          output_names=output_names, dynamic_axes=axes, opset_version=17)
        return "torch.onnx.export(dynamo=False)"


def _export_torchscript(wrapper, probe, path, output_names):
    try:
        scripted, how = torch.jit.script(wrapper), "torch.jit.script"
    except Exception:  # noqa: BLE001 - modules that do not script are traced (verify_export checks batch sizes)
        scripted, how = torch.jit.trace(wrapper, probe), "torch.jit.trace"
    torch.jit.save(scripted, str(path))
    return how


def _export_torch_export(wrapper, probe, path, output_names):
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(wrapper, (probe,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(path))
    return "torch.export.export"


_EXPORTERS = {"onnx": _export_onnx, "torchscript": _export_torchscript, "torch_export": _export_torch_export}


def load_exported(path, format: str):
    """A callable ``float32 NCHW ndarray -> list of ndarrays`` running the exported file with its own runtime.

    For verifying our own exports in-process; untrusted submissions go through ``harness.sandbox``.
    """
    path = str(path)
    if format == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(path) if format == "torchscript" else torch.export.load(path).module()

    def run(x):
        with torch.no_grad():
            y = module(torch.from_numpy(x))
        return [t.numpy() for t in (y if isinstance(y, (tuple, list)) else [y])]

    return run


def verify_export(wrapper, model_path, format, input_shape, with_logvar, *, atol=1e-4, seed=0) -> float:
    """Largest |exported - PyTorch| over batches of 1, 3 and 16; InputError when it exceeds ``atol``."""
    run = load_exported(model_path, format)
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for n in VERIFY_BATCHES:
        x = rng.random((n, *input_shape), dtype=np.float32)
        with torch.no_grad():
            expected = wrapper(torch.from_numpy(x))
        expected = [t.numpy() for t in (expected if with_logvar else (expected,))]
        try:
            got = run(x)
        except Exception as exc:  # noqa: BLE001 - e.g. a traced batch size baked into the graph
            raise InputError(f"the exported {format} model fails on a batch of {n}: {exc}") from None
        if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected)):
            raise InputError(f"the exported {format} model returns shapes {[g.shape for g in got]} on a batch of "
                             f"{n}, PyTorch gives {[e.shape for e in expected]}")
        worst = max(worst, *(float(np.abs(g - e).max()) for g, e in zip(got, expected)))
    if not worst <= atol:
        raise InputError(f"the exported {format} model differs from PyTorch by {worst:.3g} (> {atol}); "
                         f"a traced encoder with data-dependent control flow needs torch.jit.script or onnx")
    return worst


def validate_submission(path) -> list[str]:
    """Run the submission checks that exist in this installation; returns the names of those that ran.

    ``harness.submission.load`` (manifest, files, no pickles) always; the sandboxed
    ``harness.sandbox.validate`` (model loaded in the sandbox, probe batches) where it is installed.
    """
    from harness.submission import load

    try:
        with load(path):
            pass
    except SubmissionFailure as exc:
        raise InputError(f"the exported submission does not validate: {exc}") from None
    try:
        from harness.sandbox import validate
    except ImportError:
        return ["submission.load"]
    report = validate(path)
    if not report.get("ok"):
        raise InputError(f"harness validate rejected the export: {report.get('verdict') or report.get('failure')}")
    return ["submission.load", "harness validate (" + ", ".join(c["name"] for c in report.get("checks", [])) + ")"]


def load_encoder_factory(spec: str, *, weights=None) -> nn.Module:
    """Build a participant's encoder from ``"package.module:callable"`` (the callable returns an ``nn.Module``).

    The module is imported with the current directory on ``sys.path``, so ``my_encoder.py`` next to
    the command works. ``weights`` is an optional safetensors file of the module's ``state_dict``
    (loaded strictly, without unpickling).
    """
    import importlib
    import os
    import sys

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InputError(f"expected a checkpoint file or 'module:callable', got {spec!r}")
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {module_name!r} for {spec!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised on import: one line, theirs
        raise InputError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    finally:
        if added:
            sys.path.remove(os.getcwd())
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise InputError(f"{module_name!r} has no attribute {attr!r}")
    try:
        encoder = factory() if not isinstance(factory, nn.Module) else factory
    except Exception as exc:  # noqa: BLE001 - the user's builder: its error, one line, exit 2
        raise InputError(f"{spec} raised {type(exc).__name__}: {exc}") from None
    if not isinstance(encoder, nn.Module):
        raise InputError(f"{spec} must be an nn.Module or return one, got {type(encoder).__name__}")
    if weights is not None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise InputError(f"cannot read weights {weights}: {exc} (expected a safetensors file)") from None
        try:
            encoder.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"weights {weights} do not fit {spec}: {str(exc).splitlines()[0]}") from None
    return encoder
