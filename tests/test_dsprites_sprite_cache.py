"""The dSprites sprite table: one checksum pins every sprite, and the on-disk copy is used only
when it holds exactly those sprites."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from harness.datasets import dsprites


@pytest.fixture
def fresh_table(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    return dsprites._SpriteTable()


def test_rendered_table_matches_the_reference_checksum_and_is_cached(fresh_table):
    """This machine renders every sprite exactly as the reference (the checksum in the code), so its
    dSprites images, and the scores on them, are those of every other machine."""
    ids = np.arange(dsprites._NUM_SPRITES)
    everything = fresh_table.get(ids)
    assert hashlib.sha256(everything).hexdigest() == dsprites.SPRITES_SHA256
    path = fresh_table.cache_path()
    table = dsprites._read_table(path)
    assert table is not None and np.array_equal(table, everything)
    # a new process (a new table) reads the whole file at its first request, however small
    again = dsprites._SpriteTable()
    assert np.array_equal(again.get(ids[:3]), everything[:3])
    assert again._rendered.all()
    assert np.array_equal(again.get(ids), everything)


def test_a_damaged_cache_file_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    path = dsprites._SpriteTable.cache_path()
    rows = (dsprites._PATCH * dsprites._PATCH + 7) // 8
    packed = np.zeros((dsprites._NUM_SPRITES, rows), dtype=np.uint8)  # right shape, wrong sprites
    np.save(path, packed)
    assert dsprites._read_table(path) is None
    with open(path, "wb") as fp:
        fp.write(b"\x93NUMPY garbage")
    assert dsprites._read_table(path) is None
    np.save(path, packed[:10])  # truncated table
    assert dsprites._read_table(path) is None


def test_few_sprites_are_rendered_alone_without_touching_the_cache(fresh_table):
    images = dsprites.DSprites().observations([0, 1, 737_279])
    assert images.shape == (3, 64, 64, 1)
    ids = np.arange(20)
    assert fresh_table.get(ids).shape == (20, 26, 26)
    assert fresh_table._rendered.sum() == 20
    assert not os.path.exists(fresh_table.cache_path())


def test_sprites_are_the_same_rendered_alone_or_in_a_block():
    some = np.array([0, 977, 5_000, 11_700, 17_549])
    alone = dsprites.render_sprites(some)
    for sprite, sid in zip(alone, some):
        start = min(sid, dsprites._NUM_SPRITES - 256)
        assert np.array_equal(sprite, dsprites.render_sprites(np.arange(start, start + 256))[sid - start])
