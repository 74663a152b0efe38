# The grader image: the same image runs `harness grade` and, with `--sandbox docker`, the sandboxed
# child that loads a submission (one container per job, see harness/sandbox/docker.py).
#
#   docker build -t harness-grader:latest .
#
# Run the grader on the host (recommended: `pip install 'disentanglement-harness[docker]'`, then
# `harness grade ... --sandbox docker`), or inside this image with the engine's socket, and the
# sandbox folders on a path that is the same inside and on the host (the engine binds host paths):
#
#   docker run --rm -v /var/run/docker.sock:/var/run/docker.sock \
#       -v /srv/challenge:/srv/challenge -e TMPDIR=/srv/challenge/tmp -w /srv/challenge \
#       harness-grader:latest harness grade submissions/ --challenge challenge.toml --db grading.db --sandbox docker
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1

# libseccomp2: the launcher's seccomp layer; bubblewrap: the bwrap backend;
# docker.io: only its client is used here (the grader attaches to the job containers' pipes).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libseccomp2 bubblewrap docker.io \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/harness
# Pinned CPU build of torch first: an unpinned torch pulls the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml setup.cfg README.md ./
COPY harness ./harness
RUN pip install '.[dask,docker]' && python -c "import harness, onnxruntime, numpy"

# The docker backend runs the launcher with this interpreter (HARNESS_DOCKER_PYTHON).
RUN test -x /usr/local/bin/python3
# the formats this image runs (harness doctor --backend docker checks each with a probe model)
LABEL org.harness.sandbox.formats=onnx,torchscript,torch_export
WORKDIR /work
CMD ["harness", "--help"]
