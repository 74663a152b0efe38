"""Resource limits for one sandboxed encoder session."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Limits:
    """What a submission may use. ``None`` means no limit.

    wall_seconds
        Wall-clock limit for loading the model and for each ``encode`` call (the parent kills the
        child's process group when it runs over: failure kind ``timeout``).
    load_wall_seconds
        Wall-clock limit for starting the sandbox and loading the model; None: ``wall_seconds``.
    total_wall_seconds
        Wall-clock budget for the whole session, loading included.
    cpu_seconds
        CPU time of the child over the session (RLIMIT_CPU, soft < hard: SIGXCPU -> ``timeout``),
        importing the runtime included (torch: 2-3 s).
    memory_mb
        Address space of the child (RLIMIT_AS): allocations beyond it fail -> ``memory_exceeded``.
        Model runtimes reserve virtual memory generously; keep it >= 2048.
    threads
        Compute threads of the runtime (onnxruntime intra-op, torch, OpenMP/BLAS env).
    max_processes
        RLIMIT_NPROC for the child's uid (threads count too); applies when the uid can be dropped.
    file_size_mb, open_files
        RLIMIT_FSIZE (any one file written) and RLIMIT_NOFILE.
    scratch_mb
        Size of the scratch folder, the child's only writable place: a tmpfs of this size where
        the sandbox has a mount namespace (writes beyond it fail with ENOSPC).
    max_latent_dim
        Widest code accepted (``latent_dim`` in submission.json): the grader holds
        images x latent_dim float32 codes, so this bounds its memory.
    batch_size
        Images per message to the child: a 10,000-image ``encode`` call is streamed in chunks.
    """

    wall_seconds: float | None = 300.0
    load_wall_seconds: float | None = None
    total_wall_seconds: float | None = None
    cpu_seconds: float | None = None
    memory_mb: int | None = 8192
    threads: int = 2
    max_processes: int | None = 256
    file_size_mb: int | None = 64
    open_files: int | None = 256
    scratch_mb: int | None = 64
    max_latent_dim: int = 256
    batch_size: int = 1024

    def __post_init__(self):
        from harness.errors import InputError

        for name in ("wall_seconds", "load_wall_seconds", "total_wall_seconds", "cpu_seconds", "memory_mb",
                     "max_processes", "file_size_mb", "open_files", "scratch_mb"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"Limits.{name} must be positive or None, got {value!r}")
        for name in ("threads", "batch_size", "max_latent_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"Limits.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)
