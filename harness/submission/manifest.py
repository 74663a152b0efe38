"""The submission manifest (``submission.json``): its JSON Schema, a bounded parser and validation.

The schema lives here and only here; ``docs/submission.schema.json`` is generated from it
(``python -m harness.submission.manifest > docs/submission.schema.json``) and a test keeps the two equal.

Every byte of a manifest is written by someone who has read this code, so :func:`parse_manifest`
bounds what the stdlib parser would not: nesting depth (``json`` recurses: 100,000 ``[`` is a
``RecursionError``), number literals (a 5,000-digit integer is a ``ValueError`` from ``int()``,
``1e999`` is ``inf``), duplicate keys (two parsers could read two different manifests) and lone
surrogates (text that cannot be written as UTF-8). :func:`manifest_problems` then applies the
schema with integers that are JSON integers (``64``, not ``64.0``; never ``true``) and messages of
bounded length.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys

from harness.text import quoted, safe_text

FORMATS = ("onnx", "torchscript", "torch_export")
MANIFEST_NAME = "submission.json"

#: The default cap on ``latent_dim``; a challenge sets its own with ``load(max_latent_dim=...)``.
DEFAULT_MAX_LATENT_DIM = 256
#: Deepest nesting of arrays/objects accepted in submission.json (the schema needs 2).
MAX_NESTING = 64
#: Longest number literal accepted (an int64 has 19 digits and a sign).
MAX_NUMBER_CHARS = 40
#: Most problems listed in one message; each is cut at MAX_PROBLEM_CHARS.
MAX_PROBLEMS = 10
MAX_PROBLEM_CHARS = 300

# ``$`` alone would match before a final newline in Python (``"champion\n"``); ``(?!\n)`` after it
# means the same in Python and in ECMA 262 (which JSON Schema patterns follow).
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9._ -]*[A-Za-z0-9._-])?$(?!\n)"

_INTEGER_NOTE = " A JSON integer literal: 64, not 64.0."

#: The value ranges a model may declare (``input.range``), besides per-channel mean/std.
RANGES = ((0, 1), (-1, 1), (0, 255))
DEFAULT_RANGE = RANGES[0]
LAYOUTS = ("NCHW", "NHWC")
#: Bounds on a mean/std ``input.range`` (on the [0, 1] scale of the images, as torchvision's).
MAX_MEAN = 10
MIN_STD = 0.001
MAX_STD = 10

MANIFEST_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:harness:submission-manifest:1",
    "title": "harness submission manifest (submission.json)",
    "description": "Describes an exported encoder: the model file, its input and its latent code. "
                   f"Integers must be written as JSON integers (64, not 64.0); arrays and objects "
                   f"nest at most {MAX_NESTING} deep; keys appear once.",
    "type": "object",
    "required": ["name", "format", "model", "input", "latent_dim"],
    "additionalProperties": False,
    "properties": {
        "name": {
            "type": "string", "minLength": 1, "maxLength": 100,
            "pattern": NAME_PATTERN,
            "description": "Display label (whose entry it is comes from the organizer's layout, never from here): letters, digits, '.', '_', '-' and "
                           "spaces, starting with a letter or digit and not ending in a space.",
        },
        "format": {
            "enum": list(FORMATS),
            "description": "onnx (.onnx, may carry external data), torchscript (torch.jit.save), "
                           "torch_export (.pt2, torch.export.save).",
        },
        "model": {
            "type": "string", "minLength": 1, "maxLength": 1024,
            "description": "Path of the model file, relative to the submission root.",
        },
        "input": {
            "type": "object",
            "required": ["channels", "height", "width"],
            "additionalProperties": False,
            "properties": {
                "channels": {"type": "integer", "enum": [1, 3],
                             "description": "Channels the model expects." + _INTEGER_NOTE},
                "height": {"type": "integer", "minimum": 1, "maximum": 4096, "description": _INTEGER_NOTE.strip()},
                "width": {"type": "integer", "minimum": 1, "maximum": 4096, "description": _INTEGER_NOTE.strip()},
                "range": {
                    "oneOf": [
                        {"enum": [list(r) for r in RANGES]},
                        {"type": "object", "required": ["mean", "std"], "additionalProperties": False,
                         "properties": {
                             "mean": {"type": "array", "minItems": 1, "maxItems": 3,
                                      "items": {"type": "number", "minimum": -MAX_MEAN, "maximum": MAX_MEAN}},
                             "std": {"type": "array", "minItems": 1, "maxItems": 3,
                                     "items": {"type": "number", "minimum": MIN_STD, "maximum": MAX_STD}}}},
                    ],
                    "default": list(DEFAULT_RANGE),
                    "description": "The values the model expects: [0, 1] (default), [-1, 1] (2x - 1), [0, 255] "
                                   "(255x), or {\"mean\": [...], \"std\": [...]} with one value per channel: "
                                   "(x - mean) / std with x in [0, 1] (torchvision's convention).",
                },
                "layout": {"enum": list(LAYOUTS), "default": LAYOUTS[0],
                           "description": "NCHW (default) or NHWC (channels last)."},
            },
            "description": "The model's input: float32, any batch size (a model exported with a fixed batch "
                           "size is fed in chunks of that size), in the declared range and layout.",
        },
        "latent_dim": {
            "type": "integer", "minimum": 1, "maximum": DEFAULT_MAX_LATENT_DIM,
            "description": "Width D of the code: the model returns float32 (N, D). The maximum is the "
                           f"default cap ({DEFAULT_MAX_LATENT_DIM}); a challenge may set another "
                           "(harness.submission.load(max_latent_dim=...))." + _INTEGER_NOTE,
        },
        "outputs": {
            "enum": [["mean"], ["mean", "logvar"]],
            "default": ["mean"],
            "description": "Model outputs in order; add logvar for metrics that need the posterior.",
        },
        "description": {"type": "string", "maxLength": 2000},
        "authors": {"type": "array", "maxItems": 100, "items": {"type": "string", "maxLength": 200}},
        "license": {"type": "string", "maxLength": 200},
        "extra": {"type": "object", "description": "Free-form metadata, ignored by the harness."},
    },
}


class ManifestSyntaxError(ValueError):
    """submission.json is not JSON the harness accepts; the message is one line saying why."""


# --- parsing ----------------------------------------------------------------------------------

_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth_exceeds(data: bytes, limit: int = MAX_NESTING) -> bool:
    """True when arrays/objects in the JSON text ``data`` nest deeper than ``limit``.

    A cheap scan of the brackets outside strings, done before ``json`` (which recurses once per
    level) sees the text; stops at the first level over the limit.
    """
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ManifestSyntaxError(f"holds an integer of {len(text)} characters; numbers must be at most "
                                  f"{MAX_NUMBER_CHARS} characters long")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ManifestSyntaxError(f"holds a number of {len(text)} characters; numbers must be at most "
                                  f"{MAX_NUMBER_CHARS} characters long")
    value = float(text)
    if not math.isfinite(value):
        raise ManifestSyntaxError(f"holds the number {safe_text(text)}, which overflows a float64")
    return value


def _parse_constant(text: str):
    raise ManifestSyntaxError(f"holds {text}, which is not JSON (JSON has no NaN or Infinity)")


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ManifestSyntaxError(f"has the key {quoted(key, 60)} twice in one object; write each key once")
        out[key] = value
    return out


def parse_manifest(data: bytes):
    """The JSON value in ``data`` (the bytes of submission.json), parsed within bounds.

    Raises :class:`ManifestSyntaxError` (a one-line message, to follow "submission.json ") for text
    that is not UTF-8 JSON, nests deeper than :data:`MAX_NESTING`, holds a number literal longer
    than :data:`MAX_NUMBER_CHARS` or that overflows, NaN/Infinity, a duplicate key, or a lone
    surrogate.
    """
    if nesting_depth_exceeds(data):
        raise ManifestSyntaxError(f"nests arrays/objects more than {MAX_NESTING} deep")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestSyntaxError(f"is not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant,
                           object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ManifestSyntaxError(f"is not valid JSON: {safe_text(exc, 200)}") from None
    except RecursionError:  # the depth scan should make this unreachable; never a traceback
        raise ManifestSyntaxError(f"nests arrays/objects more than {MAX_NESTING} deep") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestSyntaxError("holds a lone surrogate escape (such as \\ud800), which is not text") from None
    return value


# --- validation -------------------------------------------------------------------------------

def _strict_integer(checker, instance) -> bool:
    """JSON Schema calls 64.0 an integer and Python calls True one; the harness calls neither."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.lru_cache(maxsize=8)
def _validator(max_latent_dim: int = DEFAULT_MAX_LATENT_DIM):
    import copy

    import jsonschema

    base = jsonschema.Draft202012Validator
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _strict_integer))
    schema = copy.deepcopy(MANIFEST_SCHEMA)
    schema["properties"]["latent_dim"]["maximum"] = max_latent_dim
    return strict(schema)


def _where(error) -> str:
    path = ".".join(safe_text(p, 40) for p in error.absolute_path)
    return f"'{path}'" if path else "the manifest"


def _names(keys, limit: int = 5) -> str:
    keys = sorted(map(str, keys))
    shown = ", ".join(quoted(k, 40) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _problem(error, max_latent_dim: int) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"{_where(error)} is missing required field(s) {', '.join(map(repr, missing))}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return (f"{_where(error)} has unknown field(s) {_names(set(error.instance) - set(allowed))}; "
                f"allowed: {', '.join(allowed)}")
    if error.validator == "enum":
        choices = " or ".join(json.dumps(c) for c in error.validator_value)
        return f"{_where(error)} is {safe_text(json.dumps(error.instance), 60)}; must be {choices}"
    if error.validator == "type" and error.validator_value == "integer":
        return f"{_where(error)} is {safe_text(json.dumps(error.instance), 60)}; must be a JSON integer such as 64"
    if error.validator == "maximum" and path == ["latent_dim"]:
        return (f"'latent_dim' is {error.instance}; this challenge caps latent_dim at {max_latent_dim} "
                f"(max_latent_dim is set by the challenge, default {DEFAULT_MAX_LATENT_DIM})")
    if error.validator == "pattern" and path == ["name"]:
        return (f"'name' is {safe_text(json.dumps(error.instance), 80)}; use letters, digits, '.', '_', '-' "
                "and spaces, starting with a letter or digit, not ending in a space")
    if error.validator == "maxLength":
        return f"{_where(error)} is longer than {error.validator_value} characters"
    return f"{_where(error)}: {error.message}"


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _shown(value, limit: int) -> str:
    return safe_text(json.dumps(value, default=repr), limit)


_RANGE_CHOICES = "[0, 1], [-1, 1], [0, 255] or {\"mean\": [...], \"std\": [...]} (one value per channel)"


def range_problem(value, channels) -> str | None:
    """Why ``value`` is not a valid ``input.range`` for a model of ``channels`` channels, or None.

    One message naming the field; ``channels`` that is not 1 or 3 (itself a schema error) skips the
    length check."""
    shown = _shown(value, 80)
    if isinstance(value, list):
        if len(value) == 2 and all(map(_is_number, value)) and tuple(value) in RANGES:
            return None
        return f"'input.range' is {shown}; must be {_RANGE_CHOICES}"
    if not isinstance(value, dict):
        return f"'input.range' is {shown}; must be {_RANGE_CHOICES}"
    extra = sorted(set(value) - {"mean", "std"})
    if extra:
        return f"'input.range' has unknown field(s) {_names(extra)}; a mean/std range holds only 'mean' and 'std'"
    missing = [k for k in ("mean", "std") if k not in value]
    if missing:
        return f"'input.range' is missing {' and '.join(map(repr, missing))}; give both, one value per channel"
    want = channels if channels in (1, 3) and not isinstance(channels, bool) else None
    for key in ("mean", "std"):
        items = value[key]
        where = f"input.range.{key}"
        if not isinstance(items, list) or not 1 <= len(items) <= 3:
            return f"'{where}' is {_shown(items, 60)}; must be a list of 1 or 3 numbers (one per channel)"
        if want is not None and len(items) != want:
            return (f"'{where}' has {len(items)} value(s); the model has {want} channel(s) ('input.channels'): "
                    "give one per channel")
        for i, item in enumerate(items):
            if not _is_number(item):
                return f"'{where}[{i}]' is {_shown(item, 40)}; must be a finite number"
            low, high = (-MAX_MEAN, MAX_MEAN) if key == "mean" else (MIN_STD, MAX_STD)
            if not low <= item <= high:
                hint = (" (mean and std apply to images in [0, 1], as torchvision's do: divide 0-255 statistics "
                        "by 255)" if item > high else "")
                return f"'{where}[{i}]' is {_shown(item, 40)}; must be between {low} and {high}{hint}"
    return None


def manifest_problems(manifest, *, max_latent_dim: int = DEFAULT_MAX_LATENT_DIM) -> list[str]:
    """Every schema violation of ``manifest`` as a message a participant can act on (empty: valid).

    At most :data:`MAX_PROBLEMS` messages (the last says how many more), each one printable line of
    at most :data:`MAX_PROBLEM_CHARS` characters, whatever the manifest holds.
    """
    if isinstance(max_latent_dim, bool) or not isinstance(max_latent_dim, int) or max_latent_dim < 1:
        raise ValueError(f"max_latent_dim must be a positive integer, got {max_latent_dim!r}")
    errors = sorted(_validator(max_latent_dim).iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
    # input.range: one message of our own, naming the element at fault (the schema's oneOf says only
    # "not valid under any of the given schemas"); it also checks one value per channel
    errors = [e for e in errors if list(e.absolute_path)[:2] != ["input", "range"]]
    messages = [_problem(e, max_latent_dim) for e in errors]
    given = manifest.get("input") if isinstance(manifest, dict) else None
    if isinstance(given, dict) and "range" in given:
        problem = range_problem(given["range"], given.get("channels"))
        if problem:
            messages.append(problem)
    problems = [safe_text(m, MAX_PROBLEM_CHARS) for m in messages[:MAX_PROBLEMS]]
    if len(messages) > MAX_PROBLEMS:
        problems.append(f"and {len(messages) - MAX_PROBLEMS} more problem(s)")
    return problems


def normalize(manifest: dict) -> dict:
    """A validated manifest with defaults filled in."""
    out = dict(manifest)
    out.setdefault("outputs", ["mean"])
    given = dict(out["input"])
    value = given.get("range", list(DEFAULT_RANGE))
    # canonical: [0, 1] for [0.0, 1.0]; mean/std as floats
    given["range"] = ([int(v) for v in value] if isinstance(value, list)
                      else {k: [float(v) for v in value[k]] for k in ("mean", "std")})
    given.setdefault("layout", LAYOUTS[0])
    out["input"] = given
    return out


def range_label(value) -> str:
    """``input.range`` as the report says it: ``[0, 255]``, or ``(x - mean) / std, mean [...], std [...]``."""
    if isinstance(value, dict):
        fmt = lambda xs: "[" + ", ".join(f"{float(v):g}" for v in xs) + "]"  # noqa: E731
        return f"(x - mean) / std of x in [0, 1], mean {fmt(value['mean'])}, std {fmt(value['std'])}"
    return f"[{int(value[0])}, {int(value[1])}]"


def schema_text() -> str:
    """The published JSON Schema, as written to docs/submission.schema.json."""
    return json.dumps(MANIFEST_SCHEMA, indent=2) + "\n"


def write_schema(path: str = "docs/submission.schema.json") -> None:
    """Regenerate the published JSON Schema from :data:`MANIFEST_SCHEMA`."""
    with open(path, "w") as fh:
        fh.write(schema_text())


if __name__ == "__main__":
    sys.stdout.write(schema_text())
