"""Extension point: the ``docker`` backend (container details belong to issue 7, grading).

:class:`harness.sandbox.backends.DockerBackend` delegates to the four functions below. A complete
implementation runs the *same* launcher (``backends.python_command(sd.lib)``) inside a container
built from local files, with the sandbox folder mounted at the same paths (``sd.lib`` and
``sd.model`` read-only, ``sd.scratch`` read-write), ``docker run -i --rm --network none
--memory ... --pids-limit ... --cpus ... --read-only --cap-drop ALL --security-opt no-new-privileges``,
so that stdin/stdout carry the wire protocol (:mod:`harness.sandbox.protocol`) and stderr the
model's log. The launcher then applies Landlock/seccomp/rlimits inside the container as usual
(``launcher_layers`` says which), and ``cfg["external_layers"]`` should name what Docker added.

Until then ``available()`` says why the backend cannot be used, and ``open_encoder(...,
backend="docker")`` fails with an ``infra_error`` (never counted against a participant).
"""

from __future__ import annotations

import subprocess


def available() -> tuple[bool, str]:
    return False, "the docker backend's container is not built yet (issue 7); use 'process' or 'bwrap'"


def launcher_layers(limits, device: str) -> dict:
    """Layers the launcher applies itself inside the container (namespaces come from Docker)."""
    return {"namespaces": False, "landlock": True, "seccomp": True, "rlimits": True, "uid": None,
            "no_new_privs": True}


def spawn(sd, cfg: dict) -> subprocess.Popen:  # pragma: no cover - filled by issue 7
    raise NotImplementedError("docker backend: see harness/sandbox/docker.py")


def kill(proc, sd) -> None:  # pragma: no cover - filled by issue 7
    """Stop the container (``docker kill``); the caller also kills the client's process group."""
