"""Fixtures of the empanada-proofread tests: synthetic volumes, zarr on a chunk-counting store."""

from __future__ import annotations

import numpy as np
import pytest

try:
    import zarr
    _Wrapper = zarr.storage.WrapperStore
except ImportError:  # the zarr tests skip (see `need_zarr`)
    zarr = None
    _Wrapper = object


def need_zarr():
    if zarr is None:
        pytest.skip("zarr>=3 is needed for the zarr-backed label tests")


class CountingStore(_Wrapper):
    """Wraps a store and records the chunk keys read and written."""

    def __init__(self, store):
        super().__init__(store)
        self.reads, self.writes = [], []

    async def get(self, key, prototype, byte_range=None):
        if "/c/" in f"/{key}" or key.startswith("c/"):
            self.reads.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def set(self, key, value):
        if key.startswith("c/"):
            self.writes.append(key)
        return await self._store.set(key, value)

    async def delete(self, key):
        # an all-background chunk is deleted rather than written: a write all the same
        if key.startswith("c/"):
            self.writes.append(key)
        return await self._store.delete(key)

    def reset(self):
        self.reads.clear()
        self.writes.clear()


def chunk_key(idx):
    return "c/" + "/".join(str(int(i)) for i in idx)


def to_zarr(array, chunks, counting=False):
    need_zarr()
    store = zarr.storage.MemoryStore()
    if counting:
        store = CountingStore(store)
    z = zarr.create_array(store=store, shape=array.shape, chunks=chunks, dtype=array.dtype,
                          fill_value=0)
    z[...] = array
    if counting:
        store.reset()
    return z, store


def blobs(shape=(12, 40, 40), n=8, seed=0, dtype=np.uint32):
    """Separate box-and-ball objects with ids 1..n (touching pairs included)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype)
    grid = np.indices(shape)
    for i in range(1, n + 1):
        centre = [rng.integers(2, s - 2) for s in shape]
        radii = [max(1, s // rng.integers(5, 9)) for s in shape]
        d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
        labels[(d <= 1) & (labels == 0)] = i
    return labels



@pytest.fixture
def volume():
    return blobs()


@pytest.fixture
def make_blobs():
    return blobs


@pytest.fixture
def make_zarr():
    return to_zarr


@pytest.fixture
def key_of():
    return chunk_key


@pytest.fixture(scope="session")
def lucchi():
    from empanada_core.testing import data_path

    tifffile = pytest.importorskip("tifffile", reason="tifffile reads the Lucchi labels")
    folder = data_path("lucchi_epfl_hippocampus", "mito_instances_3d.tif")
    return tifffile.imread(folder / "mito_instances_3d.tif")
