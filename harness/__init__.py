"""harness: grade learned representations for disentanglement.

The pure core is :mod:`harness.datasets` and :mod:`harness.metrics`; everything else
(submission, sandbox, evaluation, grading, baseline, cli) builds on it.
"""

__version__ = "0.1.0"
