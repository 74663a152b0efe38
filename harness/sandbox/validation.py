"""``harness validate``: is this submission gradable? A verdict a participant can act on.

Checks, in order, stopping at the first failure: the manifest and files (``load``), loading the
model in the sandbox, probe batches (sizes 1 and 257 by default) with output shape, dtype and
finiteness checked. Non-fatal observations (constant or non-deterministic codes, channel tiling,
CUDA fallback, no sandbox) go to ``notes``.
"""

from __future__ import annotations

import time

import numpy as np

from harness.errors import SubmissionFailure

PROBE_SIZES = (1, 257)


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
        Batch sizes of the probe batches (257 crosses no power of two: catches fixed batch axes).
    seed : int, default 0
        Seed of the numpy Generator drawing the probe images (uniform uint8); recorded.

    Returns
    -------
    dict with ``ok`` (bool), ``verdict`` (one line), ``failure`` (None or kind/message/detail),
    ``checks`` (list of name/ok/message), ``submission`` (name/format/sha256), ``manifest``,
    ``layers``, ``notes``, ``seed``, ``timing``.
    """
    from harness.sandbox import Limits, open_encoder
    from harness.submission.core import load

    limits = limits or Limits()
    report = {"schema": "harness.validation/1", "path": str(path), "ok": False, "verdict": "", "failure": None,
              "checks": [], "submission": None, "manifest": None, "backend": backend, "device": device,
              "layers": [], "notes": [], "seed": seed, "probe_sizes": list(probe_sizes), "timing": {}}
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
