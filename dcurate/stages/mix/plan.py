"""The mix stage's planning math: the seeded selection key of each document, target shares
(explicit, temperature, UniMax), integer apportioning, and the global plan (:class:`MixPlan`) that
the stage's reduce rounds fill and its apply step reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.workfile import work_type
from dcurate.text.keys import seeded_keys

# -- hashing --------------------------------------------------------------------------------------


def selection_keys(ids: pa.Array | pa.ChunkedArray, seed: int) -> np.ndarray:
    """A uint64 key per document from (seed, id): the order in which documents are taken
    (seeded FNV-1a + fmix64, :func:`dcurate.text.keys.seeded_keys`)."""
    return seeded_keys(ids, seed, variant="fnv1a-fmix64")


# -- weights ----------------------------------------------------------------------------------------


def apportion(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``shares`` (largest-remainder method;
    ties go to the earlier domain)."""
    shares = np.asarray(shares, dtype=np.float64)
    if total == 0 or shares.sum() <= 0:
        return np.zeros(len(shares), dtype=np.int64)
    exact = shares / shares.sum() * total
    base = np.floor(exact + 1e-9).astype(np.int64)
    left = int(total - base.sum())
    if left > 0:
        rem = exact - base
        order = np.lexsort((np.arange(len(rem)), -rem))
        base[order[:left]] += 1
    return base


def unimax_budget(sizes: np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax (Chung et al. 2023, Algorithm 1): visit domains from smallest to largest; each gets
    the remaining budget split uniformly over the domains left, capped at ``max_epochs`` times its
    size; the budget it cannot use passes on to the larger domains."""
    sizes = np.asarray(sizes, dtype=np.float64)
    alloc = np.zeros(len(sizes))
    left = float(budget)
    order = np.lexsort((np.arange(len(sizes)), sizes))
    for i, d in enumerate(order):
        alloc[d] = min(left / (len(sizes) - i), sizes[d] * max_epochs)
        left -= alloc[d]
    return alloc


def temperature_shares(sizes: np.ndarray, temperature: float) -> np.ndarray:
    """p_d proportional to n_d^(1/T), computed in log space (no overflow for small T)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    out = np.zeros(len(sizes))
    pos = sizes > 0
    if pos.any():
        lg = np.log(sizes[pos]) / temperature
        e = np.exp(lg - lg.max())
        out[pos] = e / e.sum()
    return out


# -- plan -------------------------------------------------------------------------------------------


@work_type
@dataclass
class MixPlan:
    """The global plan; per-domain arrays are indexed like ``domains`` (sorted names)."""

    domains: list[str]
    unit: str  # "docs" or "tokens"
    shares: np.ndarray  # target share per domain
    avail_docs: np.ndarray
    avail_tokens: np.ndarray
    target: np.ndarray  # per-domain target in ``unit`` (float for tokens)
    full_epochs: np.ndarray  # whole epochs per domain
    rem_bin: np.ndarray  # boundary key bin of the remainder, -1 if none
    rem_need: np.ndarray  # docs still needed in that bin (docs) / tokens (tokens)
    before_docs: np.ndarray  # docs of the remainder in bins below rem_bin
    before_tokens: np.ndarray
    size: float  # requested output size in ``unit``
    string_ids: bool  # ids are cast to string (repeated copies need "#e<k>" suffixes)
    # filled by round 2
    cut_key: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    cut_shard: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cut_piece: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cut_row: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    has_cut: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    sel_docs: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    sel_tokens: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i, d in enumerate(self.domains):
            avail = self.avail_docs[i] if self.unit == "docs" else self.avail_tokens[i]
            sel = self.sel_docs[i] if self.unit == "docs" else self.sel_tokens[i]
            total_sel = (self.sel_docs if self.unit == "docs" else self.sel_tokens).sum()
            out.append(
                {
                    "domain": d,
                    "available_docs": int(self.avail_docs[i]),
                    "available_tokens": int(self.avail_tokens[i]),
                    "target_share": round(float(self.shares[i]), 6),
                    "target": round(float(self.target[i]), 3)
                    if self.unit == "tokens"
                    else int(self.target[i]),
                    "selected_docs": int(self.sel_docs[i]),
                    "selected_tokens": int(self.sel_tokens[i]),
                    "realized_share": round(float(sel / total_sel), 6) if total_sel else 0.0,
                    "epochs": round(float(sel / avail), 4) if avail else 0.0,
                }
            )
        return out

    def table(self) -> str:
        rows = self.rows()
        head = [
            "domain",
            "avail docs",
            "avail tokens",
            "target",
            f"target {self.unit}",
            "selected docs",
            "selected tokens",
            "realized",
            "epochs",
        ]
        body = [
            [
                r["domain"],
                f"{r['available_docs']:,}",
                f"{r['available_tokens']:,}",
                f"{r['target_share']:.4f}",
                f"{r['target']:,.0f}",
                f"{r['selected_docs']:,}",
                f"{r['selected_tokens']:,}",
                f"{r['realized_share']:.4f}",
                f"{r['epochs']:.3f}",
            ]
            for r in rows
        ]
        tot = [
            "total",
            f"{int(self.avail_docs.sum()):,}",
            f"{int(self.avail_tokens.sum()):,}",
            "1.0000",
            f"{float(self.target.sum()):,.0f}",
            f"{int(self.sel_docs.sum()):,}",
            f"{int(self.sel_tokens.sum()):,}",
            "1.0000",
            "",
        ]
        cells = [head, *body, tot]
        widths = [max(len(r[j]) for r in cells) for j in range(len(head))]

        def fmt(r: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))
            )

        return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body), fmt(tot)])

