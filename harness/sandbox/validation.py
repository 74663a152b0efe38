"""``harness validate``: is this submission gradable? A verdict a participant can act on.

Checks, in order, stopping at the first failure: the manifest and files (``load``), loading the
model in the sandbox, probe batches (sizes 1 and 257 by default) with output shape, dtype and
finiteness checked. Non-fatal observations (constant or non-deterministic codes, channel tiling,
a fixed batch size, CUDA fallback, no sandbox) go to ``notes``; the input-range check's findings
go to ``warnings`` (and to ``notes``, which ``harness validate`` prints).

The input-range check (:func:`range_findings`): a model that expects [0, 255] but was declared
with the default [0, 1] (or any such mix-up) still loads and encodes, and silently scores worse.
It is fed :data:`RANGE_PROBES` structured images (rectangles of random brightness on random
backgrounds) in the declared convention and in each other named one ([0, 1], [-1, 1], [0, 255]).
For each, the *relative spread* of the code is the median over code dimensions of
``std / (std + |mean|)`` over the images: scale-free, so a model that is linear or positively
homogeneous in its input (whose scores do not depend on the range) has the same relative spread
in every convention. A trained encoder's is typically 0.3 to 0.7 on these images (the example
beta-VAE's: 0.69), an untrained one's 0.02 to 0.2; fed inputs 255 times too small, its biases
dominate and it drops about 255-fold. When the declared convention's relative spread is under
:data:`NEAR_CONSTANT` while another's is at least :data:`SPREAD_FACTOR` times larger and at
least :data:`VARIES`, the code hardly varies because the inputs are far off the scale the model
works at: a warning names the convention that makes it vary. When every
other convention gives nearly the same codes (RMS difference under :data:`SAME_CODES` of the
codes' spread), the model ignores the range (it normalizes its input itself): a note says the
declaration does not matter. [0, 1] against [-1, 1] on a model with a sane spread in both is
not told apart: that needs the training data, which the harness does not have.
"""

from __future__ import annotations

import time

import numpy as np

from harness.errors import SubmissionFailure

PROBE_SIZES = (1, 257)
#: images fed in each input convention by the input-range check
RANGE_PROBES = 64
NAMED_CONVENTIONS = ([0, 255], [-1, 1], [0, 1])  # the order they are tried in: the likeliest mix-up first
#: a relative spread under this is "barely varies": a code fed inputs 255 times off its scale
#: varies ~1/255 of what it does at its scale, where even an untrained network's is over 0.02
NEAR_CONSTANT = 0.005
VARIES = 0.02
SPREAD_FACTOR = 10.0
SAME_CODES = 0.01


def range_probe_images(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """``n`` uint8 NHWC images with structure an encoder responds to: a background of random
    brightness, one rectangle of another, a little noise (uniform noise alone looks alike to a
    trained encoder)."""
    c, h, w = shape
    rng = np.random.default_rng([seed, 0x7A46E])
    out = np.empty((n, h, w, c), np.uint8)
    for i in range(n):
        img = np.full((h, w, c), rng.integers(0, 256) if rng.random() < 0.5 else 0, np.int16)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        img[y0:y1, x0:x1] = rng.integers(0, 256, size=c)
        img += rng.integers(-8, 9, size=img.shape, dtype=np.int16)
        out[i] = np.clip(img, 0, 255)
    return out


def relative_spread(codes: np.ndarray) -> float:
    """Median over code dimensions of ``std / (std + |mean|)`` over the rows (0 for a constant code)."""
    codes = np.asarray(codes, dtype=np.float64)
    std, level = codes.std(axis=0), np.abs(codes.mean(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(std > 0, std / (std + level), 0.0)
    return float(np.median(rel)) if rel.size else 0.0


def _label(value) -> str:
    if isinstance(value, dict):
        return "the declared mean/std"
    return f"[{int(value[0])}, {int(value[1])}]"


def range_findings(codes: dict, declared_key: str) -> tuple[list[str], list[str], dict]:
    """(warnings, notes, statistics) from ``codes``: convention label -> (N, D) codes of the same
    images, ``declared_key`` the declared one's label. See the module docstring."""
    base = codes[declared_key]
    rel = {k: relative_spread(v) for k, v in codes.items()}
    warnings, notes = [], []
    others = [k for k in codes if k != declared_key]
    best = max(others, key=lambda k: rel[k], default=None)
    if (best is not None and rel[declared_key] < NEAR_CONSTANT and rel[best] >= VARIES
            and rel[best] >= SPREAD_FACTOR * rel[declared_key]):
        fix = f'declare "range": {best}' if best.startswith("[") else "declare its range"
        warnings.append(f"input range: the code barely varies over {len(base)} probe images fed in the declared "
                        f"range {declared_key} (relative spread {rel[declared_key]:.3f}) but varies when they are "
                        f"fed in {best} ({rel[best]:.3f}): if the model expects {best}, {fix} in submission.json's "
                        "input (docs/submission.md)")
    spread = float(np.sqrt(np.mean(np.var(np.asarray(base, np.float64), axis=0)))) if len(base) else 0.0
    diffs = {}
    for k in others:
        scale = max(spread, float(np.sqrt(np.mean(np.var(np.asarray(codes[k], np.float64), axis=0)))))
        diffs[k] = float(np.sqrt(np.mean((np.asarray(codes[k], np.float64) - base) ** 2)) / scale) if scale > 0 \
            else 0.0
    if others and spread > 0 and all(d < SAME_CODES for d in diffs.values()):
        notes.append(f"input range: the codes are the same whichever range the images are fed in "
                     f"({', '.join(codes)}): the model seems to normalize its input itself, so 'range' does not matter")
    stats = {"relative_spread": {k: round(v, 6) for k, v in rel.items()},
             "difference": {k: round(v, 6) for k, v in diffs.items()}}
    return warnings, notes, stats


def _range_check(enc, sub, seed: int, report: dict) -> None:
    """The input-range check (module docstring). Runs last: a model that fails on a convention it
    was not declared for (NaN, an exception) ends only this check, with a note."""
    images = range_probe_images(RANGE_PROBES, sub.input_shape, seed)
    declared = sub.input_range
    declared_key = _label(declared)
    codes = {declared_key: enc.encode(images)}
    for value in NAMED_CONVENTIONS:
        if value == declared:
            continue
        try:
            codes[_label(value)] = enc._encode(images, input_range=value)[0]
        except SubmissionFailure as exc:
            report["notes"].append(f"input range: not checked further: the model fails on images fed in "
                                   f"{_label(value)}, which it was not declared for ({exc.kind})")
            break
    warnings, notes, stats = range_findings(codes, declared_key)
    report["range_check"] = {"declared": declared, "images": RANGE_PROBES, **stats}
    report["warnings"].extend(warnings)
    report["notes"].extend(warnings + notes)


def _check(report, name, ok, message):
    report["checks"].append({"name": name, "ok": ok, "message": message})


def validate(path, *, backend: str = "process", limits=None, device: str = "cpu", probe_sizes=PROBE_SIZES,
             seed: int = 0) -> dict:
    """Validate the submission at ``path`` end to end and return a JSON-able report.

    Parameters
    ----------
    path : str or Path
        Folder, .zip or .tar.gz of a submission.
    backend, limits, device
        As for :func:`harness.sandbox.open_encoder`.
    probe_sizes : tuple of int, default (1, 257)
        Batch sizes of the probe batches (257 crosses no power of two: catches a batch axis fixed
        inside the model that its input does not declare).
    seed : int, default 0
        Seed of the numpy Generator drawing the probe images (uniform uint8); recorded.

    Returns
    -------
    dict with ``ok`` (bool), ``verdict`` (one line), ``failure`` (None or kind/message/detail),
    ``checks`` (list of name/ok/message), ``submission`` (name/format/sha256/input_range/input_layout),
    ``manifest``, ``layers``, ``notes``, ``warnings`` (the input-range check's, also in ``notes``),
    ``range_check`` (its statistics), ``fixed_batch`` (the model's fixed batch size, or None),
    ``seed``, ``timing``.
    """
    from harness.sandbox import Limits, open_encoder
    from harness.submission.core import load

    limits = limits or Limits()
    report = {"schema": "harness.validation/1", "path": str(path), "ok": False, "verdict": "", "failure": None,
              "checks": [], "submission": None, "manifest": None, "backend": backend, "device": device,
              "layers": [], "notes": [], "warnings": [], "range_check": None, "fixed_batch": None, "seed": seed,
              "probe_sizes": list(probe_sizes), "timing": {}}
    t0 = time.monotonic()
    stage = "manifest and files"
    sub = None
    try:
        sub = load(path, max_latent_dim=limits.max_latent_dim)
        report["submission"] = sub.summary()
        report["manifest"] = sub.manifest
        _check(report, "manifest and files", True,
               f"{sub.format} model {sub.manifest['model']!r}, input {sub.input_shape}, latent_dim {sub.latent_dim}, "
               f"outputs {sub.outputs}")
        stage = "loading the model"
        t1 = time.monotonic()
        with open_encoder(sub, backend=backend, limits=limits, device=device) as enc:
            report["layers"] = enc.layers
            report["fixed_batch"] = enc.fixed_batch
            report["timing"]["load_s"] = round(time.monotonic() - t1, 3)
            _check(report, "load", True, f"{enc.info.get('runtime')} {enc.info.get('version')} on "
                   f"{enc.info.get('device')}; sandbox: {', '.join(enc.layers) or 'NONE'}")
            rng = np.random.default_rng(seed)
            c, h, w = sub.input_shape
            first = None
            for n in probe_sizes:
                stage = f"probe batch of {n}"
                x = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
                t2 = time.monotonic()
                outs = enc.encode_with_logvar(x) if sub.has_logvar else (enc.encode(x),)
                report["timing"][f"batch_{n}_s"] = round(time.monotonic() - t2, 3)
                _check(report, f"probe batch {n}", True, f"outputs {[tuple(o.shape) for o in outs]} float32, finite")
                if first is None:
                    first = (x, outs[0])
                if n > 1 and np.ptp(outs[0], axis=0).max() == 0:
                    report["notes"].append(f"the code is constant over {n} random images: valid, but it will "
                                           "score zero on every metric")
            stage = "determinism check"
            again = enc.encode(first[0])
            if not np.allclose(again, first[1], rtol=1e-4, atol=1e-5):
                report["notes"].append("encoding the same images twice gave different codes: return the "
                                       "posterior mean, not a sample")
            report["notes"].extend(enc.notes)
            stage = "input-range check"
            t3 = time.monotonic()
            _range_check(enc, sub, seed, report)
            report["timing"]["range_check_s"] = round(time.monotonic() - t3, 3)
        report["ok"] = True
        report["verdict"] = (f"VALID: {sub.name} ({sub.format}) loads and encodes batches of "
                             f"{', '.join(map(str, probe_sizes))} to float32 (N, {sub.latent_dim})")
    except SubmissionFailure as exc:
        report["failure"] = exc.to_dict()
        _check(report, stage, False, f"{exc.kind}: {exc.message}")
        report["verdict"] = f"INVALID ({exc.kind}) at {stage}: {exc.message}"
    finally:
        if sub is not None:
            sub.close()
        report["timing"]["total_s"] = round(time.monotonic() - t0, 3)
    return report
