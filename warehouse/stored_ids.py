"""Which of a window's event ids are surely not among the dedupe keys: an in-process Bloom filter (issue 14, load24).

Why: the dedupe lookup of a window's ids in `priced_event_ids` (EmbeddedRocksDB, migration 0009) cost 1-2 CPU us per
id, RocksDB's per-key read (fast23), and nearly every id a loader sees is new. The filter answers "surely not stored"
for most new ids in ~0.03-0.06 us; only ids it cannot rule out (stored ones and ~1 % false positives) go to RocksDB,
whose answer decides as before. So what is stored is unchanged as long as the filter holds every key `priced_event_ids`
holds (a superset is always safe: a key deleted since, by retention, is just a false positive). That is kept by
- building it from a scan of `priced_event_ids` under the insert lock, after the writer opened (migrations, heals,
  and on a server the writer lease: no other writer can add keys while this one holds it);
- adding a window's ids before its INSERT (a failed or killed insert leaves them in: a superset);
- the backends counting every other statement that can add keys (`Backend.key_writes`: an INSERT into
  priced_events, whose view writes the keys, or into priced_event_ids: heals, `dedup reapply`, tests, the bench's
  generator); a count the filter has not seen makes it stale, and it is built again before its next use.
A crash loses it with the process; the next writer builds it again from the keys.

Memory: a word-blocked Bloom filter of 10 bits per id of capacity, built with a quarter more room than the keys it is
built from (1.56 MB per million stored ids, at least 1.25 MB; the scan's hashes take 8 bytes per id while it is
built). It grows by layers of twice the capacity, never by a rebuild: at most ~2.5 MB per million ids it holds. A
build is a scan of RocksDB, ~0.6-0.9 CPU us per stored id, once per start (docs/rounds/warehouse.md, load24).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

BITS_PER_ID = 10
PROBES = 6  # bits set per id inside its 64-bit word: ~0.9 % false positives at 80 % of capacity (measured)
MIN_CAPACITY = 1 << 20
_SEED = 0x5EED_1D5  # polars' string hash, seeded: the same function on the scan and on every window (one process)
_ONE = np.uint64(1)
_LOW6 = np.uint64(63)
_LOW32 = np.uint64(0xFFFF_FFFF)
_32 = np.uint64(32)
_MIX = np.uint64(0xBF58_476D_1CE4_E5B9)


def id_hashes(ids: Any) -> np.ndarray:
    """64-bit hashes of event ids (an Arrow string or binary array, chunked or not), as one uint64 array."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if not pa.types.is_string(ids.type):
        ids = ids.cast(pa.string())  # a server may return String as binary: hash the same text the same way
    return pl.Series(values=ids).hash(seed=_SEED).to_numpy()


class _Layer:
    """One Bloom filter of a fixed capacity: each id sets PROBES bits in one 64-bit word (one cache miss a probe)."""

    def __init__(self, capacity: int):
        self.words = np.zeros(max(64, -(-capacity * BITS_PER_ID // 64)), np.uint64)
        if len(self.words) >= 1 << 32:
            raise ValueError("a filter layer holds at most 2^32 words")
        self.capacity = capacity
        self.count = 0

    def _place(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The word: the low 32 bits scaled to the layer's size (multiply-shift: no power-of-two rounding of memory).
        index = (((hashes & _LOW32) * np.uint64(len(self.words))) >> _32).astype(np.intp)
        # The bits in it: 6-bit slices of the hash mixed again (splitmix64's step), independent of the word.
        mixed = (hashes ^ (hashes >> np.uint64(31))) * _MIX
        pattern = np.zeros(len(hashes), np.uint64)
        for probe in range(PROBES):
            pattern |= _ONE << ((mixed >> np.uint64(64 - 6 * (probe + 1))) & _LOW6)
        return index, pattern

    def add(self, hashes: np.ndarray) -> None:
        index, pattern = self._place(hashes)
        # A fancy-index OR keeps one write per word when two ids share a word: repeat for those until all are in.
        while len(index):
            self.words[index] |= pattern
            missing = (self.words[index] & pattern) != pattern
            index, pattern = index[missing], pattern[missing]
        self.count += len(hashes)

    def may_hold(self, hashes: np.ndarray) -> np.ndarray:
        index, pattern = self._place(hashes)
        return (self.words[index] & pattern) == pattern


class StoredIdFilter:
    """A superset of the dedupe keys, as a Bloom filter: `may_hold(ids)` False means the id is surely not stored."""

    def __init__(self, capacity: int = MIN_CAPACITY):
        self._layers = [_Layer(max(capacity, MIN_CAPACITY))]
        self.key_writes = 0  # the backend's count of key-writing statements this filter has seen

    @property
    def nbytes(self) -> int:
        return sum(layer.words.nbytes for layer in self._layers)

    @property
    def count(self) -> int:
        return sum(layer.count for layer in self._layers)

    def add_hashes(self, hashes: np.ndarray) -> None:
        while len(hashes):
            layer = self._layers[-1]
            room = layer.capacity - layer.count
            if room <= 0:  # full: a layer of twice the capacity, so the false positives stay bounded
                self._layers.append(_Layer(2 * layer.capacity))
                continue
            layer.add(hashes[:room])
            hashes = hashes[room:]

    def add(self, ids: Any) -> None:
        self.add_hashes(id_hashes(ids))

    def may_hold(self, ids: Any) -> np.ndarray:
        hashes = id_hashes(ids)
        found = self._layers[0].may_hold(hashes)
        for layer in self._layers[1:]:
            found |= layer.may_hold(hashes)
        return found


def build(backend: Any) -> StoredIdFilter:
    """The filter of every key `priced_event_ids` holds now (a scan; the caller holds the insert lock)."""
    key_writes = backend.key_writes
    hashes = [id_hashes(chunk.column(0)) for chunk in backend.scan_arrow("SELECT event_id FROM priced_event_ids")
              if chunk.num_rows]
    stored = sum(len(h) for h in hashes)
    id_filter = StoredIdFilter(stored + stored // 4)  # room for a quarter more before a layer is added
    for chunk in hashes:
        id_filter.add_hashes(chunk)
    id_filter.key_writes = key_writes
    return id_filter


def current(backend: Any) -> StoredIdFilter | None:
    """The backend's filter, built again when a statement it has not seen may have added keys; None for a backend
    that does not count its key writes (a test's stand-in), which then looks every id up in RocksDB."""
    if getattr(backend, "key_writes", None) is None or not hasattr(backend, "scan_arrow"):
        return None
    id_filter = getattr(backend, "stored_id_filter", None)
    if id_filter is None or id_filter.key_writes != backend.key_writes:
        id_filter = backend.stored_id_filter = build(backend)
    return id_filter

