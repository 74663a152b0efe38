"""results.json (DESIGN 3.5, schema ``harness.results/1``, JSON Schema in docs/results.schema.json)."""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path

import numpy as np

SCHEMA = "harness.results/1"


def _version(dist: str) -> str | None:
    # importlib.metadata, not import: importing torch only to read its version costs seconds.
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment(*, device: str | None, sandbox_layers) -> dict:
    """Versions that can change a score, the device used and the isolation layers applied."""
    from harness import __version__

    return {
        "harness": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": _version("scikit-learn") or "unknown",
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "device": device,
        "sandbox": [str(layer) for layer in (sandbox_layers or [])],
    }


def to_jsonable(value):
    """Plain JSON types: numpy scalars/arrays to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def new_results(submission_info: dict | None = None) -> dict:
    info = submission_info or {}
    return {
        "schema": SCHEMA,
        "status": "ok",
        "failure": None,
        "submission": {"name": info.get("name"), "format": info.get("format"), "sha256": info.get("sha256"),
                       "input_range": info.get("input_range"), "input_layout": info.get("input_layout"),
                       "fixed_batch": info.get("fixed_batch")},
        "evaluations": [],
        "environment": environment(device=None, sandbox_layers=[]),
    }


def write_results(results: dict, path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(to_jsonable(results), indent=2, allow_nan=False) + "\n")
    return path


def schema_path() -> Path:
    """Where the published JSON Schema lives in a source checkout."""
    return Path(__file__).resolve().parents[2] / "docs" / "results.schema.json"
