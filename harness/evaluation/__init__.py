"""Plan -> encode once -> score; results.json; report.html (issue 5).

>>> from harness.evaluation import evaluate
>>> results = evaluate("submissions/example", out="example-results")   # doctest: +SKIP
>>> results["evaluations"][0]["metrics"]["mig"]["discrete_mig"]         # doctest: +SKIP

``evaluate_dataset`` is one (submission, dataset) job, as grading runs it.
"""

from harness.evaluation.evaluate import default_out_dir, evaluate, evaluate_dataset, resolve_metrics, run_dataset
from harness.evaluation.results import SCHEMA, schema_path

__all__ = ["evaluate", "evaluate_dataset", "run_dataset", "resolve_metrics", "default_out_dir", "SCHEMA",
           "schema_path"]
