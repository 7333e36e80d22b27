"""ZIP-FIT compression alignment scores.

Obbad et al. 2024, "ZIP-FIT: Embedding-Free Data Selection via Compression-Based Alignment", with
the aggregation of its reference package ``zip-fit`` 1.0.9 (``ZIPFIT.rank_sequences_by_alignment``):

* ``C(s)`` = length in bytes of ``gzip.compress(s.encode("utf-8"), compresslevel=level)`` (no
  truncation; a gzip member is a raw deflate stream plus 18 bytes of header and trailer, so
  ``C(s) = len(zlib.compress(s, level, wbits=-15)) + 18``);
* ``NCD(x, t) = (C(x + t) - min(C(x), C(t))) / max(C(x), C(t))`` with ``x + t`` the plain
  concatenation, pool document first;
* ``score(x) = mean over the targets t of (1 - NCD(x, t))``.

Same numbers, less work: ``C(t)`` is computed once per target. At level 9 (the default)
``C(x + t)`` comes from :mod:`dcurate.stages.select.deflate_model`, which reproduces zlib's level-9 deflate
exactly while sharing the work that does not depend on the pair (each target's matches against
itself, the parse of ``x``); it is used only after :func:`dcurate.stages.select.deflate_model.self_check` found
it equal to the linked zlib, and pairs it does not cover go to zlib. Otherwise (other levels,
``engine="zlib"``) the deflate state after ``x`` is computed once per pool document and copied
(``zlib.compressobj.copy``) for every target, so only ``t`` is compressed per pair. Either way
``C(x + t)`` is byte-for-byte the one-shot value (the oracle test checks it against the reference
package). Memory is O(one document + the targets), never pool x targets.

Sampled self-check: while the model scores, about one pair in :data:`CHECK_EVERY` is also
compressed by zlib. The pairs are chosen by a seeded hash of (pool document id, target index), so
the sample depends only on the data and the seed, never on the workers; :class:`TargetSet` counts
the checked pairs and the mismatches, and the select stage rescores the whole stage with zlib when
any pair disagreed (so the output never depends on when a mismatch was found).

``level`` 0 is refused: deflate level 0 stores without compressing, so every ``C`` is about the
input length and the score ranks short documents first (the reference package's default).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from dcurate.text.keys import splitmix64

#: gzip header (10 bytes, no file name) + trailer (CRC32 + size, 8 bytes) around the deflate data.
GZIP_OVERHEAD = 18
DEFAULT_LEVEL = 9
#: How ``C(x + t)`` is computed: "auto" (the exact level-9 model when it applies) or "zlib".
ENGINES = ("auto", "zlib")
#: About one scored pair in this many is checked against zlib while the deflate model scores.
CHECK_EVERY = 1000
_M64 = 0xFFFFFFFFFFFFFFFF


def check_sample(doc_id: str, target_keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices of the targets whose pair with document ``doc_id`` is checked against zlib:
    ``mix(xxh64(doc_id, seed) ^ key(target)) % CHECK_EVERY == 0`` (``target_keys`` from
    :func:`target_keys`)."""
    import xxhash

    h = np.uint64(xxhash.xxh64_intdigest(doc_id.encode("utf-8", "surrogatepass"), seed=seed & _M64))
    return np.flatnonzero(splitmix64(target_keys ^ h) % np.uint64(CHECK_EVERY) == 0)


def target_keys(n: int) -> np.ndarray:
    """Per-target hash keys (of the target's index) for :func:`check_sample`."""
    return splitmix64(np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def check_level(level: int) -> int:
    if not 1 <= int(level) <= 9:
        raise ValueError(
            f"gzip level must be 1..9, got {level}; level 0 stores without compressing, so every "
            "document scores about the same (the zip-fit package's default)"
        )
    return int(level)


def compressed_size(data: bytes, level: int = DEFAULT_LEVEL) -> int:
    """``len(gzip.compress(data, compresslevel=level))``."""
    return len(zlib.compress(data, level, -15)) + GZIP_OVERHEAD


class TargetSet:
    """Encoded targets and their compressed sizes, computed once."""

    def __init__(self, targets: Sequence[str | bytes], level: int = DEFAULT_LEVEL, engine: str = "auto"):
        self.level = check_level(level)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.data = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in targets]
        if not self.data:
            raise ValueError("no target documents")
        self.sizes = np.array([compressed_size(t, self.level) for t in self.data], dtype=np.int64)
        self.model = None
        self.seed = 0
        self.checked = 0  # pairs the model scored that were also compressed by zlib
        self.mismatched = 0  # ... and where the two sizes differed
        self._keys = target_keys(len(self.data))
        if engine == "auto" and self.level == 9:
            from dcurate.stages.select import deflate_model

            if deflate_model.self_check():
                self.model = deflate_model.PreparedTargets(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def score(self, x: str | bytes, doc_id: str | None = None) -> float:
        """Mean over the targets of ``1 - NCD(x, t)``. With ``doc_id``, the pairs of the sampled
        self-check are also compressed by zlib (see :attr:`checked`, :attr:`mismatched`)."""
        xb = x.encode("utf-8") if isinstance(x, str) else x
        if self.model is not None:
            raw = self.model.sizes(xb)
            if doc_id is not None:
                for j in check_sample(doc_id, self._keys, self.seed).tolist():
                    if raw[j] >= 0:
                        self.checked += 1
                        self.mismatched += int(raw[j] != len(zlib.compress(xb + self.data[j], self.level, -15)))
            missing = np.flatnonzero(raw < 0)
            if len(missing):
                co = zlib.compressobj(self.level, zlib.DEFLATED, -15)
                head = len(co.compress(xb))
                for j in missing.tolist():
                    c = co.copy()
                    raw[j] = head + len(c.compress(self.data[j])) + len(c.flush())
            return mean_similarity(compressed_size(xb, self.level), self.sizes, raw + GZIP_OVERHEAD)
        co = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        head = len(co.compress(xb))
        # The deflate state after x, copied per target: C(x + t) without recompressing x.
        cxt = np.empty(len(self.data), dtype=np.int64)
        for j, t in enumerate(self.data):
            c = co.copy()
            cxt[j] = head + len(c.compress(t)) + len(c.flush()) + GZIP_OVERHEAD
        cx = len(co.flush()) + head + GZIP_OVERHEAD
        return mean_similarity(cx, self.sizes, cxt)

    def scores(self, texts: Sequence[str | bytes | None], ids: Sequence[object] | None = None) -> np.ndarray:
        """Scores of several pool documents (``None`` reads as the empty string); ``ids`` (the
        documents' ids) enable the sampled self-check."""
        if ids is None:
            return np.array([self.score(x if x is not None else b"") for x in texts], dtype=np.float64)
        return np.array(
            [self.score(x if x is not None else b"", str(i)) for x, i in zip(texts, ids, strict=True)],
            dtype=np.float64,
        )


def mean_similarity(cx: int, ct: np.ndarray, cxt: np.ndarray) -> float:
    """Mean over targets of ``1 - (C(xt) - min(C(x), C(t))) / max(C(x), C(t))``, accumulated in
    target order like ``numpy.mean`` of the reference's per-pair list."""
    lo = np.minimum(ct, cx)
    hi = np.maximum(ct, cx)
    sims = 1.0 - (cxt - lo) / hi
    return float(np.mean(sims))
