"""Fixtures shared by the test modules. Plain helpers live in helpers_*.py (tests/ is on the import
path through setup.cfg's ``pythonpath = tests``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def job_record(tmp_path, monkeypatch):
    """The file that ``helpers_grading.fake_job`` appends one line to per execution, so a test can
    count executions; grading worker processes find helpers_grading through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))
    record = tmp_path / "executions.txt"
    monkeypatch.setenv("GRADING_TEST_RECORD", str(record))
    return record
