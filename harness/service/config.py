"""The service's part of the challenge file: ``[[phases]]`` and ``[service]``.

```toml
[[phases]]
name = "development"
start = 2026-12-01T00:00:00Z      # TOML datetime or ISO 8601 string, UTC
end = 2027-01-15T00:00:00Z
splits = ["public", "private"]   # graded for uploads in this phase (default: every split)
show = ["public"]                # whose scores teams see during it (default: public)
daily_quota = 3                  # uploads per team per UTC day (default: unlimited)
total_quota = 30                 # uploads per team in this phase (default: unlimited)

[service]
max_upload_mb = 1024             # a larger upload is refused (413) while it streams
refresh_seconds = 10             # how often the leaderboard page reloads itself
```

The private split is revealed (board and results) once the last phase has ended.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import InputError
from harness.grading.challenge import Challenge, load_challenge

_PHASE_KEYS = {"name", "start", "end", "splits", "show", "daily_quota", "total_quota"}
_SERVICE_KEYS = {"max_upload_mb", "refresh_seconds"}


@dataclass(frozen=True)
class Phase:
    name: str
    start: dt.datetime
    end: dt.datetime
    splits: tuple[str, ...]
    show: tuple[str, ...] = ("public",)
    daily_quota: int | None = None
    total_quota: int | None = None

    def open_at(self, now: dt.datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class ServiceConfig:
    challenge: Challenge
    phases: tuple[Phase, ...] = ()
    max_upload_mb: int = 1024
    refresh_seconds: int = 10
    extra: dict = field(default_factory=dict)

    def phase_at(self, now: dt.datetime | None = None) -> Phase | None:
        now = now or utcnow()
        return next((p for p in self.phases if p.open_at(now)), None)

    def next_phase(self, now: dt.datetime | None = None) -> Phase | None:
        now = now or utcnow()
        return min((p for p in self.phases if p.start > now), key=lambda p: p.start, default=None)

    def ended(self, now: dt.datetime | None = None) -> bool:
        """Whether the last phase has ended: the private split is then revealed."""
        now = now or utcnow()
        return bool(self.phases) and now >= max(p.end for p in self.phases)

    def visible_splits(self, now: dt.datetime | None = None) -> list[str]:
        if self.ended(now):
            return list(self.challenge.splits)
        phase = self.phase_at(now)
        show = phase.show if phase else ("public",)
        return [s for s in self.challenge.splits if s in show]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _when(value, where: str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"{where}: {value!r} is not an ISO 8601 date and time") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise InputError(f"{where}: expected a date and time (ISO 8601, UTC), got {type(value).__name__}")
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _quota(value, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{where}: must be a whole number >= 0")
    return value


def load_service_config(path) -> ServiceConfig:
    """The challenge (as ``harness grade`` reads it) plus its phases and service settings."""
    challenge = load_challenge(path)
    doc = tomllib.loads(Path(path).read_text())
    phases = []
    raw = doc.get("phases", [])
    if not isinstance(raw, list):
        raise InputError(f"{path}: phases must be an array of tables ([[phases]])")
    for i, table in enumerate(raw):
        where = f"{path}: [[phases]] #{i + 1}"
        if not isinstance(table, dict):
            raise InputError(f"{where}: must be a table")
        unknown = set(table) - _PHASE_KEYS
        if unknown:
            raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_PHASE_KEYS))})")
        for key in ("name", "start", "end"):
            if key not in table:
                raise InputError(f"{where}: {key} is required")
        name = table["name"]
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"{where}: name must be a non-empty string")
        start, end = _when(table["start"], f"{where} start"), _when(table["end"], f"{where} end")
        if end <= start:
            raise InputError(f"{where}: end must be after start")
        splits = table.get("splits", challenge.splits)
        show = table.get("show", ["public"])
        for key, value in (("splits", splits), ("show", show)):
            if not isinstance(value, list) or any(s not in challenge.splits for s in value):
                raise InputError(f"{where}: {key} must list splits of the challenge ({', '.join(challenge.splits)})")
        phases.append(Phase(name=name, start=start, end=end, splits=tuple(splits), show=tuple(show),
                            daily_quota=_quota(table.get("daily_quota"), f"{where} daily_quota"),
                            total_quota=_quota(table.get("total_quota"), f"{where} total_quota")))
    phases.sort(key=lambda p: p.start)
    for a, b in zip(phases, phases[1:]):
        if b.start < a.end:
            raise InputError(f"{path}: phases {a.name!r} and {b.name!r} overlap")
    service = doc.get("service", {})
    if not isinstance(service, dict):
        raise InputError(f"{path}: [service] must be a table")
    unknown = set(service) - _SERVICE_KEYS
    if unknown:
        raise InputError(f"{path}: [service] unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_SERVICE_KEYS))})")
    max_mb = service.get("max_upload_mb", 1024)
    refresh = service.get("refresh_seconds", 10)
    for key, value in (("max_upload_mb", max_mb), ("refresh_seconds", refresh)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"{path}: [service] {key} must be a whole number >= 1")
    return ServiceConfig(challenge=challenge, phases=tuple(phases), max_upload_mb=max_mb, refresh_seconds=refresh)
