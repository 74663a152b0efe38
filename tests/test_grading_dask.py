"""The Dask path: a real LocalCluster on loopback, one task per job, results written by the grader."""

import json

import pytest

from harness.grading import load_challenge
from helpers_grading import JOB_FN, make_submission, write_challenge

distributed = pytest.importorskip("distributed")


@pytest.fixture
def cluster():
    # a worker process of its own: tasks, results and errors cross real TCP on loopback, pickled
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as c:
        yield c


@pytest.fixture
def cluster_job_record(job_record, cluster):
    return job_record  # the worker process must inherit the PYTHONPATH job_record sets before the cluster starts


def test_dask_grades_one_task_per_job_and_retries_infra(tmp_path, cluster_job_record, cluster):
    from harness.grading import Store, build_board, grade

    subs = tmp_path / "subs"
    make_submission(subs, "alpha", {"values": {"mig.discrete_mig": 0.5, "sap.sap_score": 0.3}})
    # fails on our side on its first try: Dask's retry runs it again
    make_submission(subs, "beta", {"values": {"mig.discrete_mig": 0.6, "sap.sap_score": 0.2}, "infra_failures": 1})
    make_submission(subs, "gamma", {"fail": "memory_exceeded"})
    challenge = load_challenge(write_challenge(tmp_path / "c.toml"))
    db = tmp_path / "g.db"
    summary = grade([subs], challenge, db, scheduler=cluster.scheduler_address, job_fn=JOB_FN)
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert summary.counts == {"queued": 0, "running": 0, "finished": 2, "failed": 1}
    executions = cluster_job_record.read_text().splitlines()
    assert sorted(executions) == ["alpha|dummy|public|1", "beta|dummy|public|1", "beta|dummy|public|1",
                                  "gamma|dummy|public|1"]
    with Store(db) as store:
        rows = {r["submission"]: r for r in store.jobs()}
        assert rows["gamma"]["failure_kind"] == "memory_exceeded"
        assert "fake job gamma" in rows["gamma"]["log"]  # the log came back from the worker
        assert json.loads(rows["beta"]["result"])["metrics"]["sap"]["sap_score"] == 0.2
        board = build_board(store)
    assert [r.name for r in board.rows] == ["alpha", "beta"]
