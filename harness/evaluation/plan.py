"""Plan -> encode once -> look up: the engine behind ``harness evaluate``.

Every metric declares from its seed which observations it needs (an ``ObservationRequest``:
grid ``indices`` and an ``observation_seed``). On a deterministic dataset an index always shows
the same image, so the plan encodes each *unique* index once, in a secret order, and every metric
reads its rows from that code table. On a stochastic dataset (noisy, color, scream dSprites) each sample draws
its own nuisance, so every request is rendered and encoded on its own, in order, with the
generator ``np.random.default_rng(request.observation_seed)`` exactly as running the metric alone
would.

Images are rendered in bounded-memory chunks and encoded in batches, so a plan of millions of
observations never holds more than one chunk of uint8 images at a time.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

#: images rendered per chunk (dSprites: 64x64x1 uint8 = 4 KiB each, so 8,192 images = 32 MiB)
DEFAULT_CHUNK_SIZE = 8192


@dataclass
class Timing:
    """Wall seconds spent rendering and encoding, and images counted."""

    render_s: float = 0.0
    encode_s: float = 0.0
    images_requested: int = 0
    images_encoded: int = 0
    images_from_cache: int = 0


@dataclass
class CodeTable:
    """Codes for every observation a set of requests asked for.

    Deterministic datasets: ``indices`` (sorted, unique) and ``codes`` row for row.
    Stochastic datasets: ``per_request`` maps a request key to its codes, row for row.
    """

    stochastic: bool
    indices: np.ndarray | None = None
    codes: np.ndarray | None = None
    per_request: dict[str, np.ndarray] = field(default_factory=dict)

    def lookup(self, key: str, request) -> np.ndarray:
        """Codes of ``request.indices``, in the request's order."""
        if self.stochastic:
            return self.per_request[key]
        wanted = np.asarray(request.indices, dtype=np.int64).ravel()
        pos = np.searchsorted(self.indices, wanted)
        return self.codes[pos]

    def all_codes(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every encoded code, with grid indices (None for stochastic datasets: rows follow requests)."""
        if self.stochastic:
            return np.concatenate(list(self.per_request.values())), None
        return self.codes, self.indices


def _request_indices(request) -> np.ndarray:
    return np.asarray(request.indices, dtype=np.int64).ravel()


def unique_indices(requests) -> np.ndarray:
    """Sorted unique grid indices over all requests."""
    arrays = [_request_indices(r) for r in requests]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(arrays))


def secret_order(n: int) -> np.ndarray:
    """A permutation nobody can predict (seeded from the OS, never recorded).

    Grid indices in sorted order walk the factors in C order (the first factor slowest), so a model
    that counted its calls could read factors from *when* it sees an image; encoding in a secret
    order leaves it only the pixels. The per-call shuffle in the sandbox session hides the
    position inside a batch; this one hides which batch an image falls in.
    """
    return np.random.default_rng(int.from_bytes(os.urandom(16), "little")).permutation(n)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


#: images per render step: what the low-priority thread can hold up when the caller needs its chunk
#: (smaller pieces cost the encoder more: each is Python work under the GIL, which a thread at the
#: lowest priority may hold while it waits for a core; 1,024 took evaluate from 94% of the
#: encoder's own rate to 85%)
RENDER_PIECE = 4096


def _lower_own_priority() -> None:
    """Run this (render) thread at the lowest priority: it then takes the cores in the encoder's
    gaps instead of preempting one of its threads, which stalls every op of the encoder (its
    threads meet at a barrier per op) for as long as the preempted thread waits. Measured on 2
    cores, the example submission's evaluate: 14,392 images/s, 13,987 at normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not Linux, or not permitted: only a lost speed-up
        pass


class _ChunkRender:
    """One chunk rendered piece by piece by whoever gets there first: the low-priority prefetch
    thread ahead of time, or the caller once it needs the chunk, so a busy machine, where the
    prefetch thread barely runs, delays the caller by one piece at most, not a chunk.

    ``ordered`` (a stochastic request: its generator is shared, so pieces must be drawn in order):
    a piece renders under the lock, and the prefetch thread stops at the next piece once the caller
    is waiting for it."""

    def __init__(self, render: Callable[[slice], np.ndarray], sl: slice, *, ordered: bool):
        self.render = render
        self.pieces = [slice(sl.start + p.start, sl.start + p.stop) for p in _chunks(sl.stop - sl.start, RENDER_PIECE)]
        self.parts: list = [None] * len(self.pieces)
        self.next = 0
        self.ordered = ordered
        self.caller_waiting = False
        self.lock = threading.Lock()
        self.seconds = 0.0

    def _claim(self, caller: bool) -> int | None:
        if not caller and self.caller_waiting:
            return None
        if self.next >= len(self.pieces):
            return None
        i, self.next = self.next, self.next + 1
        return i

    def _render(self, i: int) -> None:
        t0 = time.perf_counter()
        self.parts[i] = self.render(self.pieces[i])
        self.seconds += time.perf_counter() - t0

    def work(self, *, caller: bool = False) -> None:
        if caller:
            self.caller_waiting = True
        while True:
            with self.lock:
                i = self._claim(caller)
                if i is None:
                    return
                if self.ordered:
                    self._render(i)
                    continue
            self._render(i)


def _prefetched(render: Callable[[slice], np.ndarray], slices: list[slice], timing: Timing, *,
                ordered: bool = False):
    """Yield ``(slice, images)`` piece by piece, rendering the next chunk in a thread while the
    caller encodes this one.

    The sandboxed encoder runs in another process, so rendering (numpy, mostly GIL-free) and
    encoding overlap; one chunk ahead keeps memory bounded to two chunks. The pieces are yielded as
    rendered (joining them cost the caller 1.6 s of copying per dSprites evaluation). ``ordered``:
    the chunks share one generator (a stochastic request), so every piece is rendered in order.
    """

    def prefetch(chunk: _ChunkRender) -> None:
        _lower_own_priority()
        chunk.work()

    if not slices:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="harness-render") as pool:
        chunk = _ChunkRender(render, slices[0], ordered=ordered)
        future = pool.submit(prefetch, chunk)
        for i in range(len(slices)):
            chunk.work(caller=True)  # the pieces the prefetch thread has not started
            future.result()  # the one it may still be on (and what its rendering raised)
            timing.render_s += chunk.seconds
            done = chunk
            if i + 1 < len(slices):
                chunk = _ChunkRender(render, slices[i + 1], ordered=ordered)
                future = pool.submit(prefetch, chunk)
            yield from zip(done.pieces, done.parts)


def _encode_images(encode, images: np.ndarray, batch_size: int, timing: Timing, progress) -> np.ndarray:
    out = []
    for sl in _chunks(len(images), batch_size):
        t0 = time.perf_counter()
        codes = np.asarray(encode(images[sl]), dtype=np.float32)
        timing.encode_s += time.perf_counter() - t0
        timing.images_encoded += sl.stop - sl.start
        if progress is not None:
            progress.update(sl.stop - sl.start)
        out.append(codes)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def encode_grid(dataset, indices: np.ndarray, encode, *, chunk_size: int, batch_size: int,
                timing: Timing, progress=None) -> np.ndarray:
    """Codes for grid ``indices`` of a deterministic dataset, row for row."""
    indices = np.asarray(indices, dtype=np.int64)
    parts = []
    slices = list(_chunks(len(indices), chunk_size))
    for sl, images in _prefetched(lambda s: dataset.observations(indices[s]), slices, timing):
        parts.append(_encode_images(encode, images, batch_size, timing, progress))
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts)


def encode_request_stream(dataset, request, encode, *, chunk_size: int, batch_size: int,
                          timing: Timing, progress=None) -> np.ndarray:
    """Codes for one request on a stochastic dataset: rendered in order with the request's own generator.

    Datasets guarantee that rendering in consecutive chunks with one generator gives the same
    images as rendering all at once (docs/architecture.md), so this equals
    ``encode(request.observations(dataset))``.
    """
    indices = _request_indices(request)
    rng = np.random.default_rng(request.observation_seed)
    parts = []
    # The generator is shared between chunks, so chunks must be rendered strictly in order:
    # the one-ahead prefetch thread keeps that order.
    slices = list(_chunks(len(indices), chunk_size))
    for sl, images in _prefetched(lambda s: dataset.observations(indices[s], rng=rng), slices, timing,
                                  ordered=True):
        parts.append(_encode_images(encode, images, batch_size, timing, progress))
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(parts)


def table_rows(dataset, requests: dict) -> int:
    """Rows of codes the table will hold: unique grid points, or every sample when stochastic."""
    if getattr(dataset, "stochastic", False):
        return sum(len(_request_indices(r)) for r in requests.values())
    return len(unique_indices(requests.values()))


def build_code_table(dataset, requests: dict, encode, *, cache=None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     batch_size: int = 2048, progress_factory=None, timing: Timing | None = None) -> tuple[CodeTable, Timing]:
    """Encode what ``requests`` (metric name -> ObservationRequest) need, each observation once.

    ``cache`` (a :class:`harness.evaluation.cache.DatasetCache` or None) supplies codes already
    known and receives the new ones. ``progress_factory(total)`` returns a tqdm-like bar or None.
    """
    timing = timing or Timing()
    timing.images_requested += sum(len(_request_indices(r)) for r in requests.values())
    if not getattr(dataset, "stochastic", False):
        wanted = unique_indices(requests.values())
        known_idx, known_codes = (cache.lookup(wanted) if cache is not None else (np.zeros(0, np.int64), None))
        missing = np.setdiff1d(wanted, known_idx, assume_unique=True)
        timing.images_from_cache += len(wanted) - len(missing)
        bar = progress_factory(len(missing)) if progress_factory else None
        order = secret_order(len(missing))
        try:
            shuffled = encode_grid(dataset, missing[order], encode, chunk_size=chunk_size, batch_size=batch_size,
                                   timing=timing, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        new_codes = np.empty_like(shuffled)
        new_codes[order] = shuffled
        if cache is not None and len(missing):
            cache.store(missing, new_codes)
        if known_codes is not None and len(known_idx):
            all_idx = np.concatenate([known_idx, missing])
            all_codes = np.concatenate([known_codes, new_codes]) if len(missing) else known_codes
            order = np.argsort(all_idx, kind="stable")
            table = CodeTable(False, all_idx[order], all_codes[order])
        else:
            table = CodeTable(False, missing, new_codes)
        return table, timing

    table = CodeTable(True)
    todo = {}
    for name, request in requests.items():
        cached = cache.lookup_request(request) if cache is not None else None
        if cached is not None:
            table.per_request[name] = cached
            timing.images_from_cache += len(cached)
        else:
            todo[name] = request
    bar = progress_factory(sum(len(_request_indices(r)) for r in todo.values())) if progress_factory else None
    try:
        for name, request in todo.items():
            codes = encode_request_stream(dataset, request, encode, chunk_size=chunk_size,
                                          batch_size=batch_size, timing=timing, progress=bar)
            table.per_request[name] = codes
            if cache is not None:
                cache.store_request(request, codes)
    finally:
        if bar is not None:
            bar.close()
    return table, timing
