"""Parameters of the ``dedup`` stage (recipe keys, CLI flags, help and validation); the stage is
in :mod:`dcurate.stages.dedup.stage`."""

from __future__ import annotations

from dataclasses import dataclass

from dcurate.core.params import param

MINHASH_ONLY = {"method": ["minhash"]}  # keys that do nothing for exact/paragraphs (refused there)


@dataclass
class Params:
    method: str = param(
        "minhash",
        "minhash: near-duplicates by MinHash LSH + verification; exact: xxh3-128 of the normalised "
        "text; paragraphs: CCNet-style removal of repeated lines (Wenzek et al. 2020).",
        choices=["minhash", "exact", "paragraphs"],
    )
    threshold: float = param(
        0.8,
        "Jaccard similarity of word n-gram shingle sets at or above which two documents are "
        "duplicates (default 0.8: the usual near-duplicate threshold, e.g. Lee et al. 2022; "
        "datasketch MinHashLSH's default is 0.9).",
        min=0.0,
        max=1.0,
        only_for=MINHASH_ONLY,
    )
    ngram: int = param(
        5, "Words per shingle (default 5, as datatrove/FineWeb and the dedup ground truth).", min=1,
        only_for=MINHASH_ONLY,
    )
    num_perm: int = param(128, "MinHash permutations (default 128, datasketch's default).", min=2, max=4096, only_for=MINHASH_ONLY)
    bands: int | None = param(
        None,
        "LSH bands b (with --rows; default: chosen for P(candidate | J = threshold) >= 0.95 at "
        "the fewest candidates; datatrove/FineWeb use 14 x 8).",
        min=1,
        only_for=MINHASH_ONLY,
    )
    rows: int | None = param(None, "LSH rows per band r (with --bands).", min=1, only_for=MINHASH_ONLY)
    scheme: str = param(
        "affine32",
        "MinHash permutation scheme as in datasketch: affine32 (datasketch >= 2 default) or "
        "legacy (Mersenne-prime, datasketch < 2 and datatrove).",
        choices=["affine32", "legacy"],
        only_for=MINHASH_ONLY,
    )
    hash_seed: int = param(1, "Seed of the MinHash permutations (default 1, datasketch's default).", min=0, only_for=MINHASH_ONLY)
    verify: str = param(
        "exact",
        "Check candidate pairs before joining them: exact (shingle Jaccard of the pair), "
        "signature (MinHash estimate) or none (every LSH candidate is a duplicate).",
        choices=["exact", "signature", "none"],
        only_for=MINHASH_ONLY,
    )
    keep: str = param(
        "first",
        "Document kept per cluster: first (in shard/row order), longest (most UTF-8 bytes) or "
        "max:COLUMN (highest numeric value, e.g. max:quality); ties go to the first.",
    )
    annotate: bool = param(
        False,
        "Keep every document and add dup_cluster, dup_cluster_size and dup_kept (true for the member of "
        "its cluster that dedup keeps) columns instead of removing.",
    )
    against: str | None = param(
        None,
        "Reference shard set (file, folder or glob): remove documents that have a duplicate in it "
        "(decontamination); the reference itself is not deduplicated or written.", path=True,
    )
    clusters: str | None = param(
        None, "Where to write the cluster table (default OUT/.dcurate/clusters.arrow, an Arrow IPC file; "
        "a name ending in .parquet gets Parquet).", path=True,
    )
    max_cluster_size: int = param(
        1000, "Warn about clusters larger than this (usually a chain of false matches).", min=2
    )
    cjk_chars: bool = param(
        True,
        "Treat each Han/Kana/Thai/Lao/Khmer/Myanmar character as a word, so text written without "
        "spaces gets character n-gram shingles; no effect on other scripts.",
        only_for=MINHASH_ONLY,
    )

    def validate(self) -> None:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both --bands and --rows, or neither")
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}; "
                f"raise --num-perm or lower --bands/--rows"
            )
        if self.keep not in ("first", "longest") and not (
            self.keep.startswith("max:") and len(self.keep) > 4
        ):
            raise ValueError(f"keep must be first, longest or max:COLUMN; got {self.keep!r}")
        if self.method == "paragraphs" and self.against:
            raise ValueError("--against works with --method minhash or exact, not paragraphs")
        if self.method == "minhash" and self.threshold <= 0:
            raise ValueError("threshold must be > 0 for --method minhash")
