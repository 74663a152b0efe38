"""Weights-only checkpoints in safetensors: tensors plus a JSON header, loaded without unpickling.

A checkpoint holds the module weights (``encoder.*``, ``decoder.*``, ``discriminator.*``), the
optimiser moments (``optim.<name>.<param index>.<key>``), the torch RNG state, and JSON metadata:
the training config, the step, the data stream's numpy RNG state and the optimiser hyperparameters.
Writes are atomic (temporary file, then ``os.replace``), so an interrupt never leaves half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.errors import InputError

FORMAT = "harness.baseline.checkpoint/1"


def save_checkpoint(path, *, modules: dict, optimizers: dict, meta: dict, rng_state: torch.Tensor | None = None) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{prefix}.{key}"] = value.detach().cpu().contiguous()
    optim_meta = {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        optim_meta[name] = {"param_groups": state["param_groups"]}
        for index, slots in state["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{name}.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    if rng_state is not None:
        tensors["rng.torch"] = rng_state.cpu().contiguous()
    header = {"format": FORMAT, "meta": json.dumps(meta), "optimizers": json.dumps(optim_meta)}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)


def read_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(meta, tensors)`` of a checkpoint; InputError when the file is missing or not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a safetensors checkpoint: {exc}") from None
    if header.get("format") != FORMAT:
        raise InputError(f"{path} is a safetensors file but not a harness baseline checkpoint (format {header.get('format')!r})")
    meta = json.loads(header["meta"])
    meta["_optimizers"] = json.loads(header.get("optimizers", "{}"))
    return meta, tensors


def module_state(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def restore_optimizer(optimizer: torch.optim.Optimizer, name: str, meta: dict, tensors: dict) -> None:
    prefix = f"optim.{name}."
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, slot = key[len(prefix):].split(".", 1)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["_optimizers"][name]["param_groups"]})
