"""The submission manifest (``submission.json``): its JSON Schema and its validation.

The schema lives here and only here; ``docs/submission.schema.json`` is generated from it
(``python -m harness.submission.manifest > docs/submission.schema.json``) and a test keeps the two equal.
"""

from __future__ import annotations

import json

FORMATS = ("onnx", "torchscript", "torch_export")
MANIFEST_NAME = "submission.json"

MANIFEST_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:harness:submission-manifest:1",
    "title": "harness submission manifest (submission.json)",
    "description": "Describes an exported encoder: the model file, its input and its latent code.",
    "type": "object",
    "required": ["name", "format", "model", "input", "latent_dim"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string", "minLength": 1, "maxLength": 100,
            "pattern": "^[A-Za-z0-9][A-Za-z0-9._ -]*$",
            "description": "Submission name shown on the leaderboard.",
        },
        "format": {
            "enum": list(FORMATS),
            "description": "onnx (.onnx, may carry external data), torchscript (torch.jit.save), "
                           "torch_export (.pt2, torch.export.save).",
        },
        "model": {
            "type": "string", "minLength": 1,
            "description": "Path of the model file, relative to the submission root.",
        },
        "input": {
            "type": "object",
            "required": ["channels", "height", "width"],
            "additionalProperties": False,
            "properties": {
                "channels": {"enum": [1, 3], "description": "Channels the model expects (NCHW)."},
                "height": {"type": "integer", "minimum": 1, "maximum": 4096},
                "width": {"type": "integer", "minimum": 1, "maximum": 4096},
            },
            "description": "The model's input: float32 NCHW in [0, 1], any batch size.",
        },
        "latent_dim": {
            "type": "integer", "minimum": 1, "maximum": 100000,
            "description": "Width D of the code: the model returns float32 (N, D).",
        },
        "outputs": {
            "enum": [["mean"], ["mean", "logvar"]],
            "default": ["mean"],
            "description": "Model outputs in order; add logvar for metrics that need the posterior.",
        },
        "description": {"type": "string", "maxLength": 2000},
        "authors": {"type": "array", "items": {"type": "string"}},
        "license": {"type": "string"},
        "extra": {"type": "object", "description": "Free-form metadata, ignored by the harness."},
    },
}


def _validator():
    import jsonschema

    return jsonschema.Draft202012Validator(MANIFEST_SCHEMA)


def _where(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"'{path}'" if path else "the manifest"


def manifest_problems(manifest) -> list[str]:
    """Every schema violation of ``manifest`` as a message a participant can act on (empty: valid)."""
    problems = []
    for error in sorted(_validator().iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path))):
        if error.validator == "required":
            missing = [k for k in error.validator_value if k not in error.instance]
            problems.append(f"{_where(error)} is missing required field(s) {', '.join(map(repr, missing))}")
        elif error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(allowed))
            problems.append(f"{_where(error)} has unknown field(s) {', '.join(map(repr, extra))}; "
                            f"allowed: {', '.join(allowed)}")
        elif error.validator == "enum":
            choices = " or ".join(json.dumps(c) for c in error.validator_value)
            problems.append(f"{_where(error)} is {json.dumps(error.instance)}; must be {choices}")
        else:
            problems.append(f"{_where(error)}: {error.message}")
    return problems


def normalize(manifest: dict) -> dict:
    """A validated manifest with defaults filled in."""
    out = dict(manifest)
    out.setdefault("outputs", ["mean"])
    return out


def write_schema(path: str = "docs/submission.schema.json") -> None:
    """Regenerate the published JSON Schema from :data:`MANIFEST_SCHEMA`."""
    with open(path, "w") as fh:
        json.dump(MANIFEST_SCHEMA, fh, indent=2)
        fh.write("\n")
