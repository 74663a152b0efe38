"""The 2019 challenge ranking (DESIGN 3.6), as AIcrowd ran it.

- Per ranked value, ``rank = 1 + number of entries strictly better`` (ties share the best rank).
- An entry's score is its mean rank over the ranked values (lower is better).
- One entry per participant, chosen greedily: rank the pool, take the best entry of a participant
  not yet placed, drop that participant's other entries from the pool, rank the pool again, and
  repeat. Dropping a participant's weaker entries changes the others' ranks, which is why the choice
  is made one participant at a time rather than from one ranking of everything.
- Ties go to the earlier submission.

Entries must hold finite values only: failed and NaN results are filtered out before ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """A rankable submission: ``values`` in the order of the ranked columns; ``order`` is its
    submission order (smaller = earlier)."""

    name: str
    participant: str
    order: float
    values: tuple


def value_ranks(entries, higher_is_better) -> list[list[int]]:
    """``ranks[i][j]`` = 1 + number of entries strictly better than entry i on column j."""
    for e in entries:
        if len(e.values) != len(higher_is_better):
            raise ValueError(f"entry {e.name!r} has {len(e.values)} values, expected {len(higher_is_better)}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in e.values):
            raise ValueError(f"entry {e.name!r} has a non-finite value: failed/NaN results never rank")
    ranks = []
    for e in entries:
        row = []
        for j, higher in enumerate(higher_is_better):
            v = e.values[j]
            better = sum(1 for o in entries if (o.values[j] > v if higher else o.values[j] < v))
            row.append(1 + better)
        ranks.append(row)
    return ranks


def mean_ranks(entries, higher_is_better) -> list[float]:
    """Each entry's mean rank over the columns."""
    return [sum(r) / len(r) for r in value_ranks(entries, higher_is_better)]


def select_best_per_participant(entries, higher_is_better) -> list[Entry]:
    """The greedy choice of one entry per participant, in the order they were chosen."""
    pool = list(entries)
    chosen: list[Entry] = []
    placed: set[str] = set()
    while True:
        candidates = [e for e in pool if e.participant not in placed]
        if not candidates:
            return chosen
        # rank sums are integers: exact ties, no float noise
        sums = {id(e): sum(r) for e, r in zip(pool, value_ranks(pool, higher_is_better))}
        best = min(candidates, key=lambda e: (sums[id(e)], e.order))
        chosen.append(best)
        placed.add(best.participant)
        pool = [e for e in pool if e.participant != best.participant or e is best]


@dataclass(frozen=True)
class Placed:
    entry: Entry
    position: int          # 1 + number of board entries with a strictly lower mean rank
    mean_rank: float
    ranks: tuple           # per-column ranks among the board's entries


def rank_board(entries, higher_is_better, *, best_per_participant: bool = True) -> list[Placed]:
    """The leaderboard: one entry per participant (greedy), ranked among themselves, best first."""
    board = select_best_per_participant(entries, higher_is_better) if best_per_participant else list(entries)
    if not board:
        return []
    ranks = value_ranks(board, higher_is_better)
    sums = [sum(r) for r in ranks]
    placed = [
        Placed(entry=e, position=1 + sum(1 for s in sums if s < sums[i]), mean_rank=sums[i] / len(ranks[i]),
               ranks=tuple(ranks[i]))
        for i, e in enumerate(board)
    ]
    placed.sort(key=lambda p: (p.mean_rank, p.entry.order))
    return placed
