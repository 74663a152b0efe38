"""The plan's render-ahead: pieces in order by a low-priority thread or by the caller, the same
images as one render, and the caller never waits on more than one piece."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from harness import datasets
from harness.evaluation import plan
from harness.evaluation.plan import Timing, _chunks, _prefetched


@pytest.mark.parametrize("name", ["noisy_dsprites", "dsprites"])
def test_chunks_rendered_in_pieces_equal_one_render(name, monkeypatch):
    monkeypatch.setattr(plan, "RENDER_PIECE", 3)
    ds = datasets.load(name)
    idx = np.random.default_rng(1).integers(0, ds.num_observations, 40)
    rng = np.random.default_rng(7)
    parts = [images for _, images in _prefetched(lambda sl: ds.observations(idx[sl], rng=rng),
                                                  list(_chunks(len(idx), 11)), Timing(), ordered=ds.stochastic)]
    whole = ds.observations(idx, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("ordered", [False, True])
def test_the_caller_renders_what_a_stalled_prefetch_thread_has_not_started(ordered, monkeypatch):
    monkeypatch.setattr(plan, "RENDER_PIECE", 10)
    release, stuck = threading.Event(), threading.Event()
    who = {}

    def render(sl):
        name = threading.current_thread().name
        if name.startswith("harness-render") and sl.start == 100:
            stuck.set()
            release.wait(10)  # the prefetch thread, stuck on the second chunk's first piece
        who[sl.start] = name
        return np.arange(sl.start, sl.stop)

    out = []
    for sl, images in _prefetched(render, list(_chunks(300, 100)), Timing(), ordered=ordered):
        out.append(images)
        if sl.start == 0:
            assert stuck.wait(10)  # the prefetch thread is on it (at its low priority, it may take a while)
            threading.Timer(0.3, release.set).start()
    np.testing.assert_array_equal(np.concatenate(out), np.arange(300))
    second_chunk = [who[s] for s in range(100, 200, 10)]
    assert second_chunk[0].startswith("harness-render")
    # the caller took every piece after the stalled one (in order, when ordered)
    assert second_chunk[1:] == ["MainThread"] * 9


@pytest.mark.parametrize("ordered", [False, True])
def test_a_render_error_in_the_prefetch_thread_reaches_the_caller(ordered, monkeypatch):
    monkeypatch.setattr(plan, "RENDER_PIECE", 100)  # one piece per chunk

    failed = threading.Event()

    def render(sl):
        if sl.start == 100 and threading.current_thread().name.startswith("harness-render"):
            failed.set()
            raise KeyError("the dataset file vanished")
        return np.arange(sl.start, sl.stop)

    got = []
    with pytest.raises(KeyError, match="vanished"):
        for sl, images in _prefetched(render, list(_chunks(300, 100)), Timing(), ordered=ordered):
            got.append(sl.start)
            assert failed.wait(10)  # the prefetch thread has taken the next chunk and failed on it
    assert got == [0]
