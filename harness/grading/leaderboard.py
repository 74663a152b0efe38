"""Leaderboards from a grading store: one per split, in table, CSV, JSON, Markdown or HTML.

Columns are the challenge's ranking values on each dataset of the split (one dataset: the 2019
board). Each value is shown with its 95% interval (the metrics' ``<key>_ci95``). Neighbouring
entries whose intervals overlap on every ranked column are flagged ``~``: the data cannot tell them
apart, whatever their order. An interval that is missing counts as the single point of the value.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from dataclasses import dataclass, field

from harness.errors import InputError
from harness.grading.challenge import Challenge
from harness.grading.ranking import Entry, rank_board
from harness.grading.store import Store

FORMATS = ("table", "csv", "json", "md", "html")


@dataclass
class Row:
    position: int
    name: str
    participant: str
    mean_rank: float
    values: list            # per column, float
    intervals: list         # per column, [lo, hi] or None
    ranks: list
    flag: bool = False      # intervals overlap a neighbour's on every column


@dataclass
class Board:
    challenge: str
    split: str
    columns: list           # "metric.key" or "dataset:metric.key"
    rows: list = field(default_factory=list)
    unranked: list = field(default_factory=list)   # {"name", "participant", "reason"}
    not_chosen: list = field(default_factory=list)  # other entries of placed participants
    duplicates: list = field(default_factory=list)  # [entry names] with identical content, several participants
    baselines: list = field(default_factory=list)  # Row-like dicts: shown, marked, never ranked against entries


def _column_names(datasets, values) -> list[str]:
    if len(datasets) == 1:
        return list(values)
    short = [d.rsplit("/", 1)[-1] for d in datasets]
    return [f"{ds}:{v}" for ds in short for v in values]


def _interval(values: dict, key: str):
    ci = values.get(key + "_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(
            isinstance(x, (int, float)) and math.isfinite(x) for x in ci):
        return [float(ci[0]), float(ci[1])]
    return None


def build_board(store: Store, *, split: str = "public", hidden=(), baselines=()) -> Board:
    """The leaderboard of ``split`` from what the store holds now.

    ``hidden``: entry names left off the board (hidden or disqualified by the organizer);
    ``baselines``: entry names shown with their values, marked, and not ranked against the others.
    """
    hidden, baselines = set(hidden), set(baselines)
    stored = store.get_meta("challenge")
    if stored is None:
        raise InputError(f"{store.path}: nothing graded yet")
    challenge = Challenge.from_dict(stored)
    if split not in challenge.datasets:
        raise InputError(f"the challenge has no {split!r} split (it has: {', '.join(challenge.datasets)})")
    datasets = challenge.datasets[split]
    values = challenge.ranking_values
    board = Board(challenge=challenge.name, split=split, columns=_column_names(datasets, values))
    higher = [v not in challenge.lower_is_better for _ in datasets for v in values]

    jobs = {}
    for row in store.jobs(split=split):
        jobs[(row["submission"], row["dataset"])] = row
    entries, extra = [], {}
    for sub in store.submissions():
        name = sub["name"]
        if name in hidden:
            continue
        reason, vals, cis = None, [], []
        for ds in datasets:
            job = jobs.get((name, ds))
            if job is None or job["state"] in ("queued", "running"):
                reason = f"not graded yet on {ds}"
                break
            if job["state"] == "failed":
                reason = f"failed on {ds}: {job['failure_kind']}: {job['failure_message']}"
                break
            metrics = json.loads(job["result"]).get("metrics", {})
            for v in values:
                metric, _, key = v.partition(".")
                value = metrics.get(metric, {}).get(key)
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    reason = f"no value {v} on {ds}"
                    break
                if not math.isfinite(value):
                    reason = f"{v} is {value} on {ds}: not ranked"
                    break
                vals.append(float(value))
                cis.append(_interval(metrics[metric], key))
            if reason:
                break
        if reason:
            if any((name, ds) in jobs for ds in datasets):
                board.unranked.append({"name": name, "participant": sub["participant"], "reason": reason})
            continue
        if name in baselines:
            board.baselines.append({"name": name, "participant": sub["participant"], "values": vals, "intervals": cis})
            continue
        entries.append(Entry(name=name, participant=sub["participant"], order=sub["seq"], values=tuple(vals)))
        extra[name] = cis

    placed = rank_board(entries, higher)
    chosen = {p.entry.name for p in placed}
    board.not_chosen = [{"name": e.name, "participant": e.participant} for e in entries if e.name not in chosen]
    board.duplicates = [names for rows in store.duplicates()
                        if len(names := [r["name"] for r in rows if r["name"] not in hidden]) > 1]
    for p in placed:
        board.rows.append(Row(position=p.position, name=p.entry.name, participant=p.entry.participant,
                              mean_rank=p.mean_rank, values=list(p.entry.values), intervals=extra[p.entry.name],
                              ranks=list(p.ranks)))
    for a, b in zip(board.rows, board.rows[1:]):
        if all(_overlap(a, b, j) for j in range(len(board.columns))):
            a.flag = b.flag = True
    return board


def _overlap(a: Row, b: Row, j: int) -> bool:
    lo_a, hi_a = a.intervals[j] or (a.values[j], a.values[j])
    lo_b, hi_b = b.intervals[j] or (b.values[j], b.values[j])
    return lo_a <= hi_b and lo_b <= hi_a


# ---- formats ----------------------------------------------------------------------------------

def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _cell(row: Row, j: int) -> str:
    ci = row.intervals[j]
    return f"{_fmt(row.values[j])} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else _fmt(row.values[j])


FLAG_NOTE = "~ : 95% intervals overlap with a neighbour's on every ranked value (not separable by these data)"


def _grid(board: Board) -> tuple[list[str], list[list[str]]]:
    header = ["#", "submission", "participant", "mean rank"] + board.columns + ["~"]
    lines = [[str(r.position), r.name, r.participant, f"{r.mean_rank:.2f}"]
             + [_cell(r, j) for j in range(len(board.columns))] + ["~" if r.flag else ""] for r in board.rows]
    return header, lines


def _footer(board: Board) -> list[str]:
    out = []
    if any(r.flag for r in board.rows):
        out.append(FLAG_NOTE)
    for e in board.not_chosen:
        out.append(f"not shown: {e['name']} ({e['participant']} is placed with a better entry)")
    for u in board.unranked:
        out.append(f"not ranked: {u['name']}: {u['reason']}")
    for names in board.duplicates:
        out.append(f"identical model from different participants: {', '.join(names)}")
    return out


def to_table(board: Board) -> str:
    header, lines = _grid(board)
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    text = [f"{board.challenge}: {board.split} leaderboard", ""]
    for cells in [header, ["-" * w for w in widths]] + lines:
        text.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    if not board.rows:
        text.append("(no ranked entries)")
    foot = _footer(board)
    return "\n".join(text + ([""] + foot if foot else [])) + "\n"


def _csv_text(text: str) -> str:
    """A text cell a spreadsheet will not run: a leading = + - @ (or tab/CR) makes it a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def _md_text(text: str) -> str:
    """Markdown that renders as the text: HTML escaped, every Markdown character backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def to_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["position", "submission", "participant", "mean_rank"]
    for c in board.columns:
        header += [c, f"{c}_ci95_low", f"{c}_ci95_high", f"{c}_rank"]
    w.writerow(header + ["overlap_flag"])
    for r in board.rows:
        cells = [r.position, _csv_text(r.name), _csv_text(r.participant), f"{r.mean_rank:.4f}"]
        for j in range(len(board.columns)):
            ci = r.intervals[j] or ["", ""]
            cells += [repr(r.values[j]), ci[0], ci[1], r.ranks[j]]
        w.writerow(cells + [int(r.flag)])
    return buf.getvalue()


def to_dict(board: Board) -> dict:
    return {
        "schema": "harness.leaderboard/1", "challenge": board.challenge, "split": board.split,
        "columns": board.columns,
        "entries": [{"position": r.position, "submission": r.name, "participant": r.participant,
                     "mean_rank": r.mean_rank, "overlap_flag": r.flag,
                     "values": {c: {"value": r.values[j], "ci95": r.intervals[j], "rank": r.ranks[j]}
                                for j, c in enumerate(board.columns)}} for r in board.rows],
        "not_shown": board.not_chosen, "unranked": board.unranked, "identical": board.duplicates,
        "baselines": [{"submission": b["name"], "participant": b["participant"],
                       "values": {c: {"value": b["values"][j], "ci95": b["intervals"][j]}
                                  for j, c in enumerate(board.columns)}} for b in board.baselines],
    }


def to_markdown(board: Board) -> str:
    header, lines = _grid(board)
    text = [f"### {board.challenge}: {board.split} leaderboard", "",
            "| " + " | ".join(header) + " |", "|" + "|".join("---:" if i >= 3 else "---" for i in range(len(header))) + "|"]
    text += ["| " + " | ".join(_md_text(c) for c in cells) + " |" for cells in lines]
    foot = _footer(board)
    return "\n".join(text + ([""] + [f"- {_md_text(f)}" for f in foot] if foot else [])) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:14px}th,td{padding:6px 10px;border-bottom:1px solid #ddd}
th{background:#f4f4f6;text-align:left}th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
td .ci{color:#777;font-size:12px}tr.flag td{background:#fff8e1}p.note{color:#555;font-size:13px}"""


def to_html(board: Board) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in ["#", "submission", "participant"]) + "".join(
        f"<th class=num>{e(h)}</th>" for h in ["mean rank"] + board.columns)
    body = []
    for r in board.rows:
        cells = [f"<td>{r.position}{' ~' if r.flag else ''}</td>", f"<td>{e(r.name)}</td>",
                 f"<td>{e(r.participant)}</td>", f"<td class=num>{r.mean_rank:.2f}</td>"]
        for j in range(len(board.columns)):
            ci = r.intervals[j]
            ci_html = f"<br><span class=ci>[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>" if ci else ""
            cells.append(f"<td class=num>{_fmt(r.values[j])}{ci_html}</td>")
        body.append(f"<tr{' class=flag' if r.flag else ''}>{''.join(cells)}</tr>")
    foot = "".join(f"<p class=note>{e(f)}</p>" for f in _footer(board))
    title = f"{board.challenge}: {board.split} leaderboard"
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{e(title)}</title><style>{_CSS}</style>"
            f"</head><body><h1>{e(title)}</h1><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table>{foot or ''}</body></html>\n")


def render(board: Board, fmt: str = "table") -> str:
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "json":
        return json.dumps(to_dict(board), indent=2) + "\n"
    return {"table": to_table, "csv": to_csv, "md": to_markdown, "html": to_html}[fmt](board)


def leaderboard(db, *, split: str = "public", fmt: str = "table", hide_failures: bool = False) -> str:
    """The leaderboard of ``split`` in the store at ``db``, rendered as ``fmt``.

    ``hide_failures``: leave out the entries that failed (a public board need not list them; the
    organizer's ``harness status`` still does).
    """
    with Store(db, create=False) as store:
        board = build_board(store, split=split)
    if hide_failures:
        board.unranked = [u for u in board.unranked if not u["reason"].startswith("failed on ")]
    return render(board, fmt)
