"""The challenge file (TOML, DESIGN 3.6): what to grade, how to rank it, under which limits.

Every problem in a challenge file is an :class:`~harness.errors.InputError` naming the file, the
line and what to fix, e.g. ``challenge.toml: line 7: [ranking] values: 'mig.bogus' is not a value
of metric 'mig' (known: discrete_mig)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError

SPLITS = ("public", "private")
BACKENDS = ("process", "bwrap", "docker")
RANKING_METHODS = ("mean_rank",)

# The 2019 leaderboard values (DESIGN 3.4): the default ranking when the file names none.
CHALLENGE_2019_VALUES = (
    "factor_vae.eval_accuracy",
    "dci.disentanglement",
    "sap.sap_score",
    "mig.discrete_mig",
    "irs.irs",
)

_TOP_KEYS = {"name", "seed", "splits", "metrics", "ranking", "limits", "sandbox", "grading",
             "phases", "service"}  # the last two are read by `harness serve` (harness.service.config)
_SECTION_KEYS = {
    "splits": set(SPLITS),
    "metrics": {"preset", "names", "params"},
    "ranking": {"method", "values", "lower_is_better"},
    "limits": {"wall_seconds", "memory_mb", "threads", "max_latent_dim", "scratch_mb"},
    "sandbox": {"backend", "device", "image"},
    "grading": {"max_attempts", "lease_seconds", "log_cap_kb", "job_seconds", "job_memory_mb"},
}


@dataclass(frozen=True)
class Limits:
    """Per-job limits handed to the sandbox."""

    wall_seconds: float = 1800.0
    memory_mb: int = 4096
    threads: int = 1
    max_latent_dim: int = 256  # the grader keeps (images x latent_dim) float32 codes per job
    scratch_mb: int = 64


def docker_image_identity(name: str | None) -> dict:
    """The image docker jobs run in, by name and content id: rebuilding the image (same tag, other
    content) or pointing ``HARNESS_DOCKER_IMAGE`` elsewhere changes results, so it re-queues."""
    from harness.sandbox import docker as docker_backend

    image = docker_backend.image_identity(name)
    return {"name": image["name"], "id": image["id"]}


@dataclass(frozen=True)
class Challenge:
    """A parsed, validated challenge file.

    ``datasets`` maps each split to the dataset names or absolute file paths it grades on.
    ``ranking_values`` are ``"metric.key"`` strings; ``lower_is_better`` a subset of them.
    """

    name: str
    path: str
    datasets: dict[str, list[str]]
    preset: str | None = "challenge"
    metric_names: list[str] | None = None
    metric_params: dict[str, dict] = field(default_factory=dict)
    seed: int = 0
    ranking_method: str = "mean_rank"
    ranking_values: list[str] = field(default_factory=lambda: list(CHALLENGE_2019_VALUES))
    lower_is_better: list[str] = field(default_factory=list)
    limits: Limits = Limits()
    backend: str = "process"
    device: str = "cpu"
    image: str | None = None  # docker image; None: $HARNESS_DOCKER_IMAGE or harness-grader:latest
    max_attempts: int = 3
    lease_seconds: float = 120.0
    log_cap_kb: int = 64
    job_seconds: float | None = None  # grader-side guard for a whole job; None: max(4 x wall, 3600)
    job_memory_mb: int = 8192  # address space of the trusted job process (codes, metrics), not the model's
    source: str = ""

    @property
    def job_time_limit(self) -> float:
        return self.job_seconds or max(4 * self.limits.wall_seconds, 3600.0)

    @property
    def splits(self) -> list[str]:
        return [s for s in SPLITS if self.datasets.get(s)]

    def evaluation_config(self) -> dict:
        """What decides a job's result besides the submission: a change here regrades."""
        return {
            "preset": self.preset,
            "metrics": self.metric_names,
            "metric_params": self.metric_params,
            "seed": self.seed,
            "limits": vars(self.limits),
            "backend": self.backend,
            "device": self.device,
            "image": self.image if self.backend == "docker" else None,
            "image_identity": docker_image_identity(self.image) if self.backend == "docker" else None,
        }

    def config_hash(self) -> str:
        blob = json.dumps(self.evaluation_config(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "datasets": self.datasets,
            "ranking": {
                "method": self.ranking_method,
                "values": self.ranking_values,
                "lower_is_better": self.lower_is_better,
            },
            "max_attempts": self.max_attempts,
            "lease_seconds": self.lease_seconds,
            "log_cap_kb": self.log_cap_kb,
            "job_seconds": self.job_seconds,
            "job_memory_mb": self.job_memory_mb,
            **self.evaluation_config(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Challenge":
        """Rebuild from :meth:`to_dict` (the store keeps the challenge it graded with)."""
        r = d["ranking"]
        return cls(
            name=d["name"], path=d["path"], datasets=d["datasets"], preset=d["preset"],
            metric_names=d["metrics"], metric_params=d["metric_params"], seed=d["seed"],
            ranking_method=r["method"], ranking_values=r["values"], lower_is_better=r["lower_is_better"],
            limits=Limits(**d["limits"]), backend=d["backend"], device=d["device"],
            image=d["image"], max_attempts=d["max_attempts"],
            lease_seconds=d["lease_seconds"], log_cap_kb=d["log_cap_kb"], job_seconds=d.get("job_seconds"),
            job_memory_mb=d.get("job_memory_mb", 8192),
        )


class _Problem:
    """Builds InputErrors that point at the line of a key in the file."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def line_of(self, table: str, key: str | None = None) -> int | None:
        """Line (1-based) of ``key`` inside ``[table]`` (or of the table header when key is None)."""
        current = ""
        header_line = None
        for number, raw in enumerate(self.lines, 1):
            line = raw.split("#", 1)[0].strip()
            m = re.fullmatch(r"\[\s*([^\[\]]+?)\s*\]", line)
            if m:
                current = m.group(1).replace(" ", "").replace('"', "")
                if key is not None and current == (f"{table}.{key}" if table else key):
                    return number  # the key is a sub-table: [ranking.extra]
                if current == table:
                    header_line = number
                continue
            if key is None:
                continue
            m = re.match(r"([A-Za-z0-9_.\"\- ]+?)\s*=", line)
            if not m:
                continue
            dotted = m.group(1).replace(" ", "").replace('"', "")
            full = f"{current}.{dotted}" if current else dotted
            if full == (f"{table}.{key}" if table else key):
                return number
        if header_line is not None:
            return header_line
        if "." in table:  # [splits.public] may be written as splits.public = {...} or inline
            parent, _, child = table.rpartition(".")
            return self.line_of(parent, child if key is None else f"{child}.{key}") if parent else None
        return None

    def error(self, table: str, key: str | None, problem: str) -> InputError:
        line = self.line_of(table, key)
        where = f"line {line}: " if line else ""
        section = f"[{table}] " if table else ""
        label = f"{section}{key}: " if key else section
        return InputError(f"{self.path}: {where}{label}{problem}")


def _known_metrics():
    """(names -> keys, presets -> names) from the metric registry, or None before it exists."""
    try:
        from harness import metrics
    except Exception:  # the metrics package is another area's; tolerate its absence
        return None
    get, names = getattr(metrics, "get", None), getattr(metrics, "names", None)
    if get is None or names is None:
        return None
    try:
        specs = {n: get(n) for n in names()}
    except Exception:
        return None
    keys = {n: list(getattr(s, "keys", []) or []) for n, s in specs.items()}
    params = {n: set(getattr(s, "default_params", {}) or {}) for n, s in specs.items()}
    presets: dict[str, list[str]] = {}
    for n, s in specs.items():
        for p in getattr(s, "presets", ()) or ():
            presets.setdefault(p, []).append(n)
    return keys, presets, params


def _known_datasets() -> list[str]:
    from harness import datasets

    return datasets.names()


def load_challenge(path) -> Challenge:
    """Read and validate a challenge file. Raises InputError with the line and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"challenge file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read challenge file {path}: {exc}") from None
    return parse_challenge(text, path=path)


def parse_challenge(text: str, *, path="challenge.toml") -> Challenge:
    """Parse challenge TOML text; relative dataset paths resolve against ``path``'s folder."""
    path = Path(path)
    p = _Problem(path, text)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            msg = f"line {m.group(1)}: {msg[: m.start()].strip()} (column {m.group(2)})"
        raise InputError(f"{path}: {msg}") from None

    for key in doc:
        if key not in _TOP_KEYS:
            raise p.error("", key, f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    for section, allowed in _SECTION_KEYS.items():
        value = doc.get(section, {})
        if not isinstance(value, dict):
            raise p.error("", section, "must be a table")
        for key in value:
            if key not in allowed:
                raise p.error(section, key, f"unknown key (known: {', '.join(sorted(allowed))})")

    def typed(table, key, value, types, what):
        types = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise p.error(table, key, f"must be {what}, got {value!r}")
        return value

    name = typed("", "name", doc.get("name", path.stem), str, "a string")
    seed = typed("", "seed", doc.get("seed", 0), int, "an integer")

    # splits
    base = path.parent
    known_ds = None
    datasets: dict[str, list[str]] = {}
    splits = doc.get("splits", {})
    if not splits:
        raise p.error("splits", None, "no splits: add [splits.public] with datasets = [...]")
    for split, table in splits.items():
        if not isinstance(table, dict):
            raise p.error("splits", split, "must be a table with datasets = [...]")
        for key in table:
            if key != "datasets":
                raise p.error(f"splits.{split}", key, "unknown key (known: datasets)")
        names = table.get("datasets")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise p.error(f"splits.{split}", "datasets", "must be a non-empty list of dataset names or file paths")
        resolved = []
        for n in names:
            if known_ds is None:
                known_ds = _known_datasets()
            if n in known_ds:
                resolved.append(n)
                continue
            candidate = Path(n) if Path(n).is_absolute() else base / n
            if not candidate.exists():
                raise p.error(f"splits.{split}", "datasets",
                              f"{n!r} is neither a known dataset ({', '.join(known_ds)}) nor an existing file")
            resolved.append(str(candidate.resolve()))
        if len(set(resolved)) != len(resolved):
            raise p.error(f"splits.{split}", "datasets", "lists a dataset twice")
        datasets[split] = resolved
    if "public" not in datasets:
        raise p.error("splits", None, "a [splits.public] table is required (the board participants see)")

    # metrics
    m = doc.get("metrics", {})
    preset = m.get("preset")
    metric_names = m.get("names")
    if preset is None and metric_names is None:
        preset = "challenge"
    if preset is not None:
        typed("metrics", "preset", preset, str, "a string")
    if metric_names is not None:
        if not isinstance(metric_names, list) or not metric_names or not all(isinstance(x, str) for x in metric_names):
            raise p.error("metrics", "names", "must be a non-empty list of metric names")
    params = m.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise p.error("metrics", "params", "must hold one table per metric, e.g. [metrics.params.factor_vae]")

    known = _known_metrics()
    selected = None
    if known is not None:
        keys, presets, known_params = known
        if preset is not None and preset not in presets:
            raise p.error("metrics", "preset", f"unknown preset {preset!r} (known: {', '.join(sorted(presets))})")
        for n in metric_names or ():
            if n not in keys:
                raise p.error("metrics", "names", f"unknown metric {n!r} (known: {', '.join(sorted(keys))})")
        # as the evaluator runs them: the names when given, else the preset's metrics
        selected = set(metric_names) if metric_names else set(presets.get(preset, ()))
        for n in params:
            if n not in selected:
                raise p.error(f"metrics.params.{n}", None, f"metric {n!r} is not among the graded metrics ({', '.join(sorted(selected))})")
            for key in params[n]:
                if known_params[n] and key not in known_params[n]:
                    raise p.error(f"metrics.params.{n}", key,
                                  f"unknown parameter of {n} (known: {', '.join(sorted(known_params[n]))})")
            from harness import metrics as metrics_mod

            try:  # values in range (the registry's constraints), before any job is queued
                metrics_mod.get(n).validate(params[n])
            except InputError as exc:
                bad = next((k for k in params[n] if f": {k} " in str(exc)), None)
                raise p.error(f"metrics.params.{n}", bad, str(exc).split(": ", 1)[-1]) from None

    # ranking
    r = doc.get("ranking", {})
    method = typed("ranking", "method", r.get("method", "mean_rank"), str, "a string")
    if method not in RANKING_METHODS:
        raise p.error("ranking", "method", f"unknown method {method!r} (known: {', '.join(RANKING_METHODS)})")
    values = r.get("values", list(CHALLENGE_2019_VALUES))
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise p.error("ranking", "values", "must be a non-empty list of \"metric.key\" strings")
    for v in values:
        metric, dot, key = v.partition(".")
        if not dot or not metric or not key:
            raise p.error("ranking", "values", f"{v!r} is not of the form \"metric.key\"")
        if known is not None:
            if metric not in selected:
                raise p.error("ranking", "values", f"{v!r}: metric {metric!r} is not among the graded metrics ({', '.join(sorted(selected))})")
            if known[0][metric] and key not in known[0][metric]:
                raise p.error("ranking", "values", f"{v!r} is not a value of metric {metric!r} (known: {', '.join(known[0][metric])})")
    if len(set(values)) != len(values):
        raise p.error("ranking", "values", "lists a value twice")
    lower = r.get("lower_is_better", [])
    if not isinstance(lower, list) or not all(isinstance(v, str) and v in values for v in lower):
        raise p.error("ranking", "lower_is_better", "must list some of the ranking values")

    # limits, sandbox, grading
    lim = doc.get("limits", {})
    wall = typed("limits", "wall_seconds", lim.get("wall_seconds", 1800), (int, float), "a number of seconds")
    mem = typed("limits", "memory_mb", lim.get("memory_mb", 4096), int, "an integer (MB)")
    threads = typed("limits", "threads", lim.get("threads", 1), int, "an integer")
    max_latent = typed("limits", "max_latent_dim", lim.get("max_latent_dim", 256), int, "an integer")
    scratch = typed("limits", "scratch_mb", lim.get("scratch_mb", 64), int, "an integer (MB)")
    for key, value in (("wall_seconds", wall), ("memory_mb", mem), ("threads", threads),
                       ("max_latent_dim", max_latent), ("scratch_mb", scratch)):
        if value <= 0:
            raise p.error("limits", key, f"must be positive, got {value}")
    sb = doc.get("sandbox", {})
    backend = typed("sandbox", "backend", sb.get("backend", "process"), str, "a string")
    if backend not in BACKENDS:
        raise p.error("sandbox", "backend", f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    device = typed("sandbox", "device", sb.get("device", "cpu"), str, "a string")
    image = sb.get("image")
    if image is not None:
        typed("sandbox", "image", image, str, "a string")
    g = doc.get("grading", {})
    max_attempts = typed("grading", "max_attempts", g.get("max_attempts", 3), int, "an integer")
    lease = typed("grading", "lease_seconds", g.get("lease_seconds", 120), (int, float), "a number of seconds")
    log_cap = typed("grading", "log_cap_kb", g.get("log_cap_kb", 64), int, "an integer (KiB)")
    job_seconds = g.get("job_seconds")
    if job_seconds is not None:
        typed("grading", "job_seconds", job_seconds, (int, float), "a number of seconds")
    job_memory = typed("grading", "job_memory_mb", g.get("job_memory_mb", 8192), int, "an integer (MB)")
    for key, value in (("max_attempts", max_attempts), ("lease_seconds", lease), ("log_cap_kb", log_cap),
                       ("job_seconds", job_seconds or 1), ("job_memory_mb", job_memory)):
        if value <= 0:
            raise p.error("grading", key, f"must be positive, got {value}")

    return Challenge(
        name=name, path=str(path.resolve()), datasets=datasets, preset=preset, metric_names=metric_names,
        metric_params=params, seed=seed, ranking_method=method, ranking_values=values, lower_is_better=lower,
        limits=Limits(float(wall), mem, threads, max_latent, scratch), backend=backend, device=device, image=image,
        max_attempts=max_attempts, lease_seconds=float(lease), log_cap_kb=log_cap,
        job_seconds=float(job_seconds) if job_seconds is not None else None, job_memory_mb=job_memory,
        source=text,
    )
