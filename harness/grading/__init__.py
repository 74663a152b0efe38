"""Organizer grading (DESIGN 3.6): challenge file, SQLite store, job lifecycle, executors, leaderboard.

>>> from harness.grading import load_challenge, grade, leaderboard
>>> challenge = load_challenge("examples/challenge.toml")                 # doctest: +SKIP
>>> grade(["submissions/"], challenge, "grading.db", workers=2)           # doctest: +SKIP
>>> print(leaderboard("grading.db", split="public", fmt="table"))        # doctest: +SKIP
"""

from harness.grading.challenge import Challenge, Limits, load_challenge, parse_challenge
from harness.grading.discover import SubmissionEntry, discover
from harness.grading.grader import GradeSummary, grade
from harness.grading.leaderboard import FORMATS, Board, build_board, leaderboard, render
from harness.grading.ranking import Entry, mean_ranks, rank_board, select_best_per_participant, value_ranks
from harness.grading.status import status_report
from harness.grading.store import Store

__all__ = ["Board", "Challenge", "Entry", "FORMATS", "GradeSummary", "Limits", "Store", "SubmissionEntry",
           "build_board", "discover", "grade", "leaderboard", "load_challenge", "mean_ranks", "parse_challenge",
           "rank_board", "render", "select_best_per_participant", "status_report", "value_ranks"]
