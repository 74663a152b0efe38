"""``harness serve``: the challenge as a service. Teams upload submissions over HTTP (or
``harness submit``), quotas and phases hold, the batch grader's store and loop grade them, and a
live leaderboard shows the scores (docs/service.md).

- :mod:`harness.service.config`: the challenge file's ``[[phases]]`` and ``[service]`` tables;
- :mod:`harness.service.teams`: teams and their tokens (stored as scrypt hashes);
- :mod:`harness.service.uploads`: accepted uploads, quotas, visibility, the organizer's flags;
- :mod:`harness.service.app`: the FastAPI app (JSON API under ``/api/v1`` and server-rendered pages).
"""
