"""``mix``: rebalance a corpus to a target domain mixture with exact per-domain counts.

A global stage in two scan/reduce rounds, so that the plan is exact without holding every
document key in memory:

1. scan: per shard piece, documents and tokens per domain, and a histogram of each document's
   selection key (a 64-bit hash of the seed and the document id) over 65,536 bins;
   reduce: the target mixture and size give each domain's target (``--docs``: a document count,
   ``--tokens``: a token count); a domain gets ``e`` whole epochs (every document ``e`` times) and
   a remainder taken in key order; the histogram says which key bin the remainder ends in.
2. scan: the documents of those boundary bins (key, tokens, position); reduce: the exact cutoff.

apply then keeps, per document, ``e`` copies plus one more when its (key, position) is at or
below its domain's cutoff. The keys depend only on (seed, id): the selection is the same for any
sharding or number of workers. Copies after the first get ``epoch`` 1, 2, ... and the id
``<id>#e<epoch>``; every row gets the ``epoch`` column (0 for first copies).

Target mixtures: explicit ``--weights`` (or a YAML file, e.g. from ``dcurate mix-fit``),
temperature sampling ``p_d ~ n_d^(1/T)`` (Arivazhagan et al. 2019; Conneau et al. 2020), or UniMax
(Chung et al. 2023, ICLR: a uniform budget per domain, capped at ``--max-epochs`` epochs of the
domain, the leftover redistributed uniformly over the other domains).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core import stagefiles
from dcurate.core.errors import InputError, ModelError, PlanError, RecipeError
from dcurate.core.params import param
from dcurate.core.stage import Result, ShardInfo, Stage, register, with_column
from dcurate.io import storage
from dcurate.io.atomic import write_bytes
from dcurate.stages.mix.plan import (
    MixPlan,
    apportion,
    selection_keys,
    temperature_shares,
    unimax_budget,
)

log = logging.getLogger("dcurate")

EPOCH_COLUMN = "epoch"
BIN_BITS = 16  # histogram of the top 16 key bits: 65,536 bins per domain
BIN_SHIFT = 64 - BIN_BITS
BYTES_PER_TOKEN = 4  # token approximation: ceil(UTF-8 bytes / 4), see MixParams.tokens
INT64_MAX = np.iinfo(np.int64).max
SUM_TOLERANCE = 1e-4  # weights summing to 1 within this are taken as they are


@dataclass
class MixParams:
    weights: dict[str, float] = param(
        {},
        "Target share per domain, e.g. web=0.5,code=0.2,wiki=0.3 (recipe: a mapping). Domains present "
        "but not named get 0 and are dropped. Weights not summing to 1 are normalised with a warning "
        "(an error with --strict).", path=True,
    )
    weights_file: str | None = param(
        None,
        "YAML/JSON file of weights: a mapping domain: weight or a 'weights:' mapping (what `dcurate mix-fit` writes).", path=True,
    )
    temperature: float | None = param(
        None,
        "Temperature sampling: p_d proportional to n_d^(1/T), n_d = domain size in docs (or tokens with "
        "--tokens). T=1 keeps the natural mixture, larger T flattens it (Arivazhagan et al. 2019 use T=5; "
        "XLM-R's alpha=0.3 is T=3.3).",
        min=1e-6,
    )
    unimax: bool = param(
        False,
        "UniMax (Chung et al. 2023): a uniform budget per domain, capped at --max-epochs epochs of the "
        "domain; what a capped domain cannot use is shared uniformly by the others.",
    )
    docs: int | None = param(
        None,
        "Output size in documents. Default: the largest size that repeats no document (weights, "
        "temperature) or the input's size (UniMax).",
        min=0,
    )
    tokens: int | None = param(
        None,
        "Output size in tokens (per-domain targets in tokens). Tokens are counted as ceil(UTF-8 bytes / 4) "
        "(OpenAI's ~4 characters per English token rule; no tokenizer needed, and unlike words*1.3 it "
        "does not undercount text without spaces), or exactly with --tokenizer.",
        min=0,
    )
    max_epochs: float = param(
        4.0,
        "Most times one domain may be repeated (fractional allowed); a target that needs more fails. "
        "Default 4: up to ~4 epochs cost little (Muennighoff et al. 2023, 'Scaling Data-Constrained LMs').",
        min=1e-9,
    )
    domain_field: str = param(
        "domain",
        "Column holding each document's domain. With --domain-paths or --domain-model, the domain used is "
        "written to this column.",
    )
    domain_paths: list[str] = param(
        [],
        "Domains from input paths: GLOB=DOMAIN entries (e.g. 'data/web/*=web,*/code-*.parquet=code'); the "
        "first glob matching a shard's path wins (a relative glob also matches at any depth).",
    )
    domain_model: str | None = param(
        None, "fastText classifier whose top label (without __label__) is the domain of each document.", path=True
    )
    tokenizer: str | None = param(
        None, "A Hugging Face `tokenizers` JSON file to count tokens exactly (needs: pip install tokenizers).", path=True
    )
    strict: bool = param(False, "Fail on weights that do not sum to 1 instead of normalising them.")

    def validate(self) -> None:
        modes = [
            bool(self.weights) or self.weights_file is not None,
            self.temperature is not None,
            self.unimax,
        ]
        if sum(modes) == 0:
            raise ValueError(
                "give the target mixture: --weights (or --weights-file), --temperature T or --unimax"
            )
        if sum(modes) > 1:
            raise ValueError(
                "--weights/--weights-file, --temperature and --unimax are alternatives; give one"
            )
        if self.weights and self.weights_file is not None:
            raise ValueError("give --weights or --weights-file, not both")
        if self.docs is not None and self.tokens is not None:
            raise ValueError("give --docs or --tokens, not both")
        if self.tokenizer is not None and self.tokens is None:
            raise ValueError("--tokenizer counts tokens for --tokens; give --tokens N too")
        neg = {k: v for k, v in self.weights.items() if v < 0 or not math.isfinite(v)}
        if neg:
            raise ValueError(f"weights must be finite and >= 0; got {neg}")
        if self.domain_paths and self.domain_model:
            raise ValueError("--domain-paths and --domain-model are alternatives; give one")
        for item in self.domain_paths:
            glob, sep, dom = item.rpartition("=")
            if not sep or not glob.strip() or not dom.strip():
                raise ValueError(f"--domain-paths entries are GLOB=DOMAIN; got {item!r}")


# -- the stage ------------------------------------------------------------------------------------


def _fasttext_model(path: str) -> Any:
    """Load a fastText model, through the quality stage's helper when it exists."""
    try:
        from dcurate.stages.quality import classifier as fasttext_util

        loader = getattr(fasttext_util, "load_model", None)
        if loader is not None:
            return loader(path)
    except ImportError:
        pass
    if not os.path.exists(path):
        raise ModelError(f"--domain-model {path}: no such file")
    try:
        import fasttext
    except ImportError:
        raise ModelError("--domain-model needs fastText: pip install fasttext-numpy2-wheel") from None
    try:
        return fasttext.load_model(path)
    except Exception as e:  # noqa: BLE001 - fastText raises ValueError/RuntimeError variously
        raise ModelError(f"--domain-model {path}: not a fastText model ({e})") from None


@register
class Mix(Stage):
    """Rebalance to a target domain mixture: exact per-domain document (or token) counts,
    down-sampling without replacement, up-sampling by whole epochs then a seeded sample."""

    name = "mix"
    Params = MixParams
    summary = "Rebalance domains to target weights / temperature / UniMax with exact counts."
    example = "dcurate mix data/demo/out data/demo/mixed --weights wiki=0.5,forum=0.3,code=0.2 --docs 1000"
    kind = "global"
    rounds = 2

    def __init__(self, params: MixParams, ctx: Any):
        super().__init__(params, ctx)
        self._model: Any = None
        self._tok: Any = None
        self._cache: tuple[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        self.resolved_weights(warn=True)
        if self.params.domain_model:
            _fasttext_model(self.params.domain_model)
        if self.params.tokenizer:
            self._tokenizer()

    def setup(self) -> None:
        if self.params.domain_model and self._model is None:
            self._model = _fasttext_model(self.params.domain_model)

    def fingerprint(self) -> Any:
        out: dict[str, list[Any]] = {}
        for key in ("weights_file", "domain_model", "tokenizer"):
            p = getattr(self.params, key)
            st = storage.stamp(p) if p else None  # a URI: its size and LastModified
            if st is not None:
                out[key] = st
                if key == "weights_file":
                    out[key].append(hashlib.sha256(storage.read_bytes(p) if storage.is_uri(p)
                                                   else Path(p).read_bytes()).hexdigest()[:16])
        return out or None

    def resolved_weights(self, warn: bool = False) -> dict[str, float] | None:
        """The explicit target weights (from --weights or --weights-file), normalised."""
        p = self.params
        if p.weights_file is not None:
            from dcurate.stages.mix.regmix import read_weights_file

            with storage.fetched(p.weights_file) as local:  # a URI: read from a cached local copy
                w = read_weights_file(local)
            where = f"weights file {p.weights_file}"
        elif p.weights:
            w, where = dict(p.weights), "--weights"
        else:
            return None
        bad = {k: v for k, v in w.items() if v < 0 or not math.isfinite(v)}
        if bad:
            raise RecipeError(f"{where}: weights must be finite and >= 0; got {bad}")
        total = sum(w.values())
        if total <= 0:
            raise RecipeError(f"{where}: the weights sum to 0")
        if abs(total - 1.0) > SUM_TOLERANCE:
            if p.strict:
                raise RecipeError(f"{where}: the weights sum to {total:g}, not 1 (--strict)")
            if warn:
                log.warning(
                    "mix: %s sum to %g, not 1; normalised to %s",
                    where,
                    total,
                    ", ".join(f"{k}={v / total:.4g}" for k, v in w.items()),
                )
        return {k: v / total for k, v in w.items()}

    def _tokenizer(self) -> Any:
        if self._tok is None:
            try:
                from tokenizers import Tokenizer
            except ImportError:
                raise ModelError("--tokenizer needs the tokenizers package: pip install tokenizers") from None
            path = self.params.tokenizer
            if not (storage.is_file(path) if storage.is_uri(path) else os.path.exists(path)):
                raise ModelError(f"--tokenizer {path}: no such file")
            with storage.fetched(path) as local:  # a URI: a cached local copy
                try:
                    self._tok = Tokenizer.from_file(local)
                except Exception as e:  # noqa: BLE001
                    raise ModelError(f"--tokenizer {path}: not a tokenizers JSON file ({e})") from None
        return self._tok

    # -- per-batch columns ------------------------------------------------------------------------
    def _labels(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> pa.Array:
        """The domain of each row (a string array without nulls)."""
        p = self.params
        if p.domain_paths:
            path = shard.path.replace(os.sep, "/")
            for item in p.domain_paths:
                glob, _, dom = item.rpartition("=")
                glob = glob.strip()
                if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, "*/" + glob.lstrip("/")):
                    return pa.array([dom.strip()] * batch.num_rows, type=pa.string())
            raise InputError(
                f"{shard.path}: matches none of the --domain-paths globs ({', '.join(p.domain_paths)})"
            )
        if p.domain_model:
            if self._model is None:
                self.setup()
            texts = pl.Series(values=self.texts(batch)).fill_null("").str.replace_all("\n", " ", literal=True)
            labels, _ = self._model.predict(texts.to_list(), k=1)
            return pa.array(
                [lab[0].removeprefix("__label__") if lab else "" for lab in labels], type=pa.string()
            )
        name = p.domain_field
        if name not in batch.schema.names:
            raise InputError(
                f"{shard.path}: no domain column '{name}' (columns: {', '.join(batch.schema.names)}). "
                "Hint: --domain-field NAME, --domain-paths GLOB=DOMAIN or --domain-model MODEL"
            )
        col = batch.column(name)
        if col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(
                f"{shard.path}: row {pos + row + 1}: field '{name}' is null (every document needs a domain)"
            )
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        return col

    def _tokens(self, batch: pa.RecordBatch) -> np.ndarray:
        texts = self.texts(batch)
        if self.params.tokenizer:
            enc = self._tokenizer().encode_batch(
                pl.Series(values=texts).fill_null("").to_list(), add_special_tokens=False
            )
            return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
        nbytes = pc.fill_null(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        return (nbytes + (BYTES_PER_TOKEN - 1)) // BYTES_PER_TOKEN

    def _keys(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> np.ndarray:
        name = self.ctx.id_field
        if name not in batch.schema.names:
            raise InputError(
                f"{shard.path}: no id column '{name}' (columns: {', '.join(batch.schema.names)})"
            )
        ids = batch.column(name)
        if ids.null_count:
            row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{shard.path}: row {pos + row + 1}: field '{name}' is null")
        return selection_keys(ids, self.ctx.seed)

    @staticmethod
    def _codes(labels: pa.Array, index: dict[str, int]) -> np.ndarray:
        """Map each label to ``index[label]`` (adding new labels to ``index``); vectorised."""
        enc = pc.dictionary_encode(labels)
        dic = enc.dictionary.to_pylist()
        lut = np.array([index.setdefault(v, len(index)) for v in dic], dtype=np.int64)
        return (
            lut[enc.indices.to_numpy(zero_copy_only=False)]
            if len(dic)
            else np.zeros(len(labels), dtype=np.int64)
        )

    def _plan_codes(
        self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: MixPlan, labels: pa.Array | None = None
    ) -> np.ndarray:
        index = {d: i for i, d in enumerate(plan.domains)}
        c = self._codes(self._labels(batch, shard, pos) if labels is None else labels, index)
        if len(index) > len(plan.domains):
            new = list(index)[len(plan.domains) :]
            raise PlanError(
                f"{shard.path}: domain(s) {', '.join(new)} not seen by the scan (input changed during the run?)"
            )
        return c

    # -- scan / reduce ------------------------------------------------------------------------------
    def scan(self, batches, shard: ShardInfo, round: int, plan: Any) -> Any:
        if round == 0:
            return self._scan_counts(batches, shard)
        return self._scan_boundary(batches, shard, plan)

    def _scan_counts(self, batches, shard: ShardInfo) -> dict[str, Any]:
        index: dict[str, int] = {}
        codes, tokens, keys = [], [], []
        pos = 0
        for batch in batches:
            codes.append(self._codes(self._labels(batch, shard, pos), index))
            tokens.append(self._tokens(batch))
            keys.append(self._keys(batch, shard, pos))
            pos += batch.num_rows
        names = list(index)
        if codes:
            self._save_cache(
                shard, names, np.concatenate(codes), np.concatenate(keys), np.concatenate(tokens)
            )
        if not codes:
            return {
                "domains": [],
                "n": np.zeros(0, np.int64),
                "tokens": np.zeros(0, np.int64),
                "hcode": np.zeros(0, np.int64),
                "hcount": np.zeros(0, np.int64),
                "htok": np.zeros(0, np.int64),
                "string_ids": True,
            }
        c, t = np.concatenate(codes), np.concatenate(tokens)
        b = (np.concatenate(keys) >> np.uint64(BIN_SHIFT)).astype(np.int64)
        k = len(names)
        combined = c * (1 << BIN_BITS) + b
        hcode, inv, hcount = np.unique(combined, return_inverse=True, return_counts=True)
        htok = np.bincount(inv, weights=t, minlength=len(hcode)).astype(np.int64)
        return {
            "domains": names,
            "n": np.bincount(c, minlength=k).astype(np.int64),
            "tokens": np.bincount(c, weights=t, minlength=k).astype(np.int64),
            "hcode": hcode.astype(np.int64),
            "hcount": hcount.astype(np.int64),
            "htok": htok,
        }

    # Round 1 keeps each piece's domain codes, keys and token counts (20 bytes a document) under
    # the stage's workdir, so that round 2 and apply need not decode the text again (nor run a
    # domain classifier again). Without the file (e.g. a cleaned workdir) they recompute.
    def _cache_path(self, shard: ShardInfo) -> Path:
        return Path(self.ctx.workdir) / f"scan-{shard.key}.npz"

    def _save_cache(self, shard: ShardInfo, names: list[str], codes, keys, tokens) -> None:
        path = self._cache_path(shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp, names=np.array(names, dtype=str), codes=codes.astype(np.int32), keys=keys, tokens=tokens
        )
        os.replace(tmp, path)

    def _load_cache(
        self, shard: ShardInfo, plan: MixPlan
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(codes into plan.domains, keys, tokens) of a piece, or None when not cached."""
        if self._cache is not None and self._cache[0] == shard.key:
            return self._cache[1]
        path = self._cache_path(shard)
        if not path.exists():
            return None
        z = stagefiles.load_npz(path, require=("names", "codes", "keys", "tokens"))
        index = {d: i for i, d in enumerate(plan.domains)}
        missing = [str(d) for d in z["names"] if str(d) not in index]
        if missing:
            return None
        lut = np.array([index[str(d)] for d in z["names"]], dtype=np.int64)
        got = (lut[z["codes"]] if len(lut) else z["codes"].astype(np.int64), z["keys"], z["tokens"])
        self._cache = (shard.key, got)
        return got

    def _scan_boundary(self, batches, shard: ShardInfo, plan: MixPlan) -> dict[str, Any]:
        want = plan.rem_bin
        out: dict[str, list[np.ndarray]] = {"dom": [], "key": [], "tok": [], "row": []}
        cached = self._load_cache(shard, plan)
        if cached is not None:  # the batches are not read at all
            c, keys, tokens = cached
            hit: Any = (
                np.flatnonzero(want[c] == (keys >> np.uint64(BIN_SHIFT)).astype(np.int64))
                if (want >= 0).any()
                else []
            )
            return {
                "dom": c[hit],
                "key": keys[hit],
                "tok": tokens[hit],
                "row": np.asarray(hit, dtype=np.int64),
            }
        pos = 0
        for batch in batches:
            n = batch.num_rows
            if (want >= 0).any():
                c = self._plan_codes(batch, shard, pos, plan)
                keys = self._keys(batch, shard, pos)
                b = (keys >> np.uint64(BIN_SHIFT)).astype(np.int64)
                hit = np.flatnonzero(want[c] == b)
                if len(hit):
                    out["dom"].append(c[hit])
                    out["key"].append(keys[hit])
                    out["tok"].append(self._tokens(batch)[hit])
                    out["row"].append(pos + hit.astype(np.int64))
            pos += n
        return {
            k: (np.concatenate(v) if v else np.zeros(0, np.uint64 if k == "key" else np.int64))
            for k, v in out.items()
        }

    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        if round == 0:
            return self._reduce_counts(partials)
        return self._reduce_boundary(partials, plan)

    def _reduce_counts(self, partials: list[tuple[ShardInfo, Any]]) -> MixPlan:
        p = self.params
        names = sorted({d for _, part in partials for d in part["domains"]})
        gi = {d: i for i, d in enumerate(names)}
        k = len(names)
        n = np.zeros(k, np.int64)
        tok = np.zeros(k, np.int64)
        hc, hn, ht = [], [], []
        for _, part in partials:
            lut = np.array([gi[d] for d in part["domains"]], dtype=np.int64)
            if not len(lut):
                continue
            np.add.at(n, lut, part["n"])
            np.add.at(tok, lut, part["tokens"])
            dom = lut[part["hcode"] >> BIN_BITS]
            hc.append(dom * (1 << BIN_BITS) + (part["hcode"] & ((1 << BIN_BITS) - 1)))
            hn.append(part["hcount"])
            ht.append(part["htok"])
        if k == 0:
            raise PlanError("mix: the input has no documents")
        hcode, inv = np.unique(np.concatenate(hc), return_inverse=True)
        hcount = np.bincount(inv, weights=np.concatenate(hn), minlength=len(hcode)).astype(np.int64)
        htok = np.bincount(inv, weights=np.concatenate(ht), minlength=len(hcode)).astype(np.int64)
        hdom = hcode >> BIN_BITS
        hbin = hcode & ((1 << BIN_BITS) - 1)

        unit = "tokens" if p.tokens is not None else "docs"
        sizes = (tok if unit == "tokens" else n).astype(np.float64)
        notes: list[str] = []
        weights = self.resolved_weights()
        if weights is not None:
            absent = [d for d, w in weights.items() if d not in gi and w > 0]
            if absent:
                raise PlanError(
                    f"mix: weighted domain(s) {', '.join(absent)} not found in the data; domains found: "
                    f"{', '.join(f'{d} ({int(n[i]):,} docs)' for d, i in gi.items())}"
                )
            shares = np.array([weights.get(d, 0.0) for d in names])
            dropped = [d for d in names if weights.get(d, 0.0) == 0]
            if dropped:
                notes.append(f"domains with weight 0, dropped: {', '.join(dropped)}")
        elif p.temperature is not None:
            shares = temperature_shares(sizes, p.temperature)
        else:
            shares = None  # UniMax: allocation below
        if unit == "tokens" and shares is not None:
            empty = [names[i] for i in np.flatnonzero((shares > 0) & (tok == 0))]
            if empty:
                raise PlanError(
                    f"mix: domain(s) {', '.join(empty)} have a target share but no tokens (all texts empty)"
                )

        # output size
        if p.tokens is not None:
            size = float(p.tokens)
        elif p.docs is not None:
            size = float(p.docs)
        elif shares is None:
            size = float(n.sum())  # UniMax default: the input's size
        else:
            pos_ = shares > 0
            size = float(
                math.floor(float(np.min(sizes[pos_] / shares[pos_])) + 1e-9)
            )  # largest without repeats
            notes.append(
                f"no --docs/--tokens: {int(size):,} docs, the largest mixture that repeats no document"
            )
        if shares is None:
            caps = np.floor(sizes * p.max_epochs + 1e-9) if unit == "docs" else sizes * p.max_epochs
            if size > caps.sum() + 1e-9:
                raise PlanError(
                    f"mix: UniMax cannot place {size:,.0f} {unit} within --max-epochs {p.max_epochs:g}: at most "
                    f"{caps.sum():,.0f} {unit} (every domain {p.max_epochs:g} times); lower the size or raise --max-epochs"
                )
            alloc = unimax_budget(sizes, size, p.max_epochs)
            if unit == "docs":
                alloc = np.minimum(apportion(alloc, int(size)), caps).astype(np.float64)
                # apportioning can only add a unit where alloc had a fraction, which is below its cap
            shares = alloc / alloc.sum() if alloc.sum() > 0 else alloc
            target = alloc
        elif unit == "docs":
            target = apportion(shares, int(size)).astype(np.float64)
        else:
            target = shares * size

        # epochs: full epochs, then the remainder in key order
        with np.errstate(divide="ignore", invalid="ignore"):
            need_epochs = np.where(
                sizes > 0, target / np.where(sizes > 0, sizes, 1), np.where(target > 0, np.inf, 0)
            )
        over = np.flatnonzero(need_epochs > p.max_epochs + 1e-9)
        if len(over):
            pos_ = shares > 0
            max_size = float(np.min(sizes[pos_] * p.max_epochs / shares[pos_]))
            worst = ", ".join(
                f"{names[i]} needs {need_epochs[i]:.2f} epochs ({target[i]:,.0f} of {sizes[i]:,.0f} {unit})"
                for i in over
            )
            raise PlanError(
                f"mix: the target cannot be met within --max-epochs {p.max_epochs:g}: {worst}. At most "
                f"{max_size:,.0f} {unit} fit this mixture; lower --{unit} or raise --max-epochs"
            )
        full = np.floor(need_epochs + 1e-12).astype(np.int64)
        if unit == "docs":
            full = (target.astype(np.int64) // np.maximum(n, 1)).astype(np.int64)
            remainder = target.astype(np.int64) - full * n
        else:
            remainder = target - full * tok
            # float noise: a remainder within 1e-9 of a whole epoch counts as that epoch
            whole = remainder >= tok - 1e-9
            full = np.where(whole & (tok > 0), full + 1, full)
            remainder = np.where(whole & (tok > 0), 0.0, np.maximum(remainder, 0.0))
        rem_bin = np.full(k, -1, np.int64)
        rem_need = np.zeros(k, np.float64)
        before_docs = np.zeros(k, np.int64)
        before_tokens = np.zeros(k, np.int64)
        for d in np.flatnonzero(remainder > 0):
            m = hdom == d
            bins_d, cnt_d, tok_d = hbin[m], hcount[m], htok[m]  # ascending bins
            cum = np.cumsum(cnt_d if unit == "docs" else tok_d)
            j = int(np.searchsorted(cum, remainder[d] - (0 if unit == "docs" else 1e-9), side="left"))
            j = min(j, len(bins_d) - 1)
            rem_bin[d] = bins_d[j]
            before_docs[d] = int(cnt_d[:j].sum())
            before_tokens[d] = int(tok_d[:j].sum())
            rem_need[d] = remainder[d] - (before_docs[d] if unit == "docs" else before_tokens[d])
        string_ids = bool((full > 1).any() or ((full == 1) & (remainder > 0)).any())
        return MixPlan(
            domains=names,
            unit=unit,
            shares=shares,
            avail_docs=n,
            avail_tokens=tok,
            target=target,
            full_epochs=full,
            rem_bin=rem_bin,
            rem_need=rem_need,
            before_docs=before_docs,
            before_tokens=before_tokens,
            size=size,
            string_ids=string_ids,
            notes=notes,
        )

    def _reduce_boundary(self, partials: list[tuple[ShardInfo, Any]], plan: MixPlan) -> MixPlan:
        k = len(plan.domains)
        parts = [(s, pt) for s, pt in partials if len(pt["dom"])]
        dom = np.concatenate([pt["dom"] for _, pt in parts]) if parts else np.zeros(0, np.int64)
        key = np.concatenate([pt["key"] for _, pt in parts]) if parts else np.zeros(0, np.uint64)
        tok = np.concatenate([pt["tok"] for _, pt in parts]) if parts else np.zeros(0, np.int64)
        row = np.concatenate([pt["row"] for _, pt in parts]) if parts else np.zeros(0, np.int64)
        shard = (
            np.concatenate([np.full(len(pt["dom"]), s.index, np.int64) for s, pt in parts])
            if parts
            else np.zeros(0, np.int64)
        )
        piece = (
            np.concatenate([np.full(len(pt["dom"]), s.piece, np.int64) for s, pt in parts])
            if parts
            else np.zeros(0, np.int64)
        )
        order = np.lexsort((row, piece, shard, key, dom))
        dom, key, tok, row, shard, piece = (
            dom[order],
            key[order],
            tok[order],
            row[order],
            shard[order],
            piece[order],
        )

        plan.cut_key = np.zeros(k, np.uint64)
        plan.cut_shard = np.zeros(k, np.int64)
        plan.cut_piece = np.zeros(k, np.int64)
        plan.cut_row = np.zeros(k, np.int64)
        plan.has_cut = np.zeros(k, bool)
        extra_docs = np.zeros(k, np.int64)
        extra_tok = np.zeros(k, np.int64)
        for d in np.flatnonzero(plan.rem_bin >= 0):
            lo, hi = np.searchsorted(dom, [d, d + 1])
            if plan.unit == "docs":
                take = int(round(plan.rem_need[d]))
                if take > hi - lo:  # cannot happen unless scan and apply saw different data
                    raise PlanError(
                        f"mix: internal error: domain {plan.domains[d]} boundary has {hi - lo} docs, needs {take}"
                    )
            else:
                cum = np.concatenate([[0], np.cumsum(tok[lo:hi])])
                take = int(np.argmin(np.abs(cum - plan.rem_need[d])))  # closest prefix (first on ties)
            if take > 0:
                j = lo + take - 1
                plan.cut_key[d], plan.cut_shard[d], plan.cut_piece[d], plan.cut_row[d] = (
                    key[j],
                    shard[j],
                    piece[j],
                    row[j],
                )
                plan.has_cut[d] = True
            elif plan.rem_bin[d] > 0:  # everything below the boundary bin, nothing inside it
                plan.cut_key[d] = np.uint64((int(plan.rem_bin[d]) << BIN_SHIFT) - 1)
                plan.cut_shard[d] = plan.cut_piece[d] = plan.cut_row[d] = INT64_MAX
                plan.has_cut[d] = True
            extra_docs[d] = plan.before_docs[d] + take
            extra_tok[d] = plan.before_tokens[d] + int(tok[lo : lo + take].sum())
        plan.sel_docs = plan.full_epochs * plan.avail_docs + extra_docs
        plan.sel_tokens = plan.full_epochs * plan.avail_tokens + extra_tok
        for note in plan.notes:
            log.info("mix: %s", note)
        log.info(
            "mix plan (target %s %s, seed %d):\n%s",
            f"{plan.size:,.0f}",
            plan.unit,
            self.ctx.seed,
            plan.table(),
        )
        return plan

    # -- apply ----------------------------------------------------------------------------------------
    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: MixPlan) -> Result:
        n = batch.num_rows
        if n == 0:
            return Result(with_column(batch, EPOCH_COLUMN, pa.array([], pa.int32())))
        cached = self._load_cache(shard, plan) if self.params.domain_model else None
        if cached is not None and pos + n <= len(cached[0]):  # the classifier's labels from the scan
            c = cached[0][pos : pos + n]
            labels = pc.take(pa.array(plan.domains, pa.string()), pa.array(c))
        else:
            labels = self._labels(batch, shard, pos)
            c = self._plan_codes(batch, shard, pos, plan, labels)
        keys = self._keys(batch, shard, pos)
        rows = pos + np.arange(n, dtype=np.int64)
        ck = plan.cut_key[c]
        sidx, spiece = shard.index, shard.piece
        cs, cp = plan.cut_shard[c], plan.cut_piece[c]
        before = (sidx < cs) | ((sidx == cs) & (spiece < cp))
        same = (sidx == cs) & (spiece == cp)
        tie_ok = before | (same & (rows <= plan.cut_row[c]))
        sel = plan.has_cut[c] & ((keys < ck) | ((keys == ck) & tie_ok))
        copies = plan.full_epochs[c] + sel.astype(np.int64)

        if self.params.domain_paths or self.params.domain_model:
            batch = with_column(batch, self.params.domain_field, labels)
        keep = copies > 0
        dropped = None
        if not keep.all():
            zero_w = plan.shares[c] == 0
            reasons = np.where(zero_w, self.reason("zero_weight"), self.reason("downsampled"))
            dropped = Result.keep_where(batch, keep, reasons).dropped
        take = np.repeat(np.arange(n, dtype=np.int64), copies)
        out = batch.take(pa.array(take, type=pa.int64()))
        starts = np.cumsum(copies) - copies
        epoch = (np.arange(len(take), dtype=np.int64) - np.repeat(starts, copies)).astype(np.int32)
        idname = self.ctx.id_field
        if plan.string_ids:
            ids = out.column(idname)
            if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
                ids = pc.cast(ids, pa.string())
            if (epoch > 0).any():
                tagged = pc.binary_join_element_wise(ids, pc.cast(pa.array(epoch), pa.string()), "#e")
                ids = pc.if_else(pa.array(epoch > 0), tagged, ids)
            out = with_column(out, idname, ids)
        out = with_column(out, EPOCH_COLUMN, pa.array(epoch, type=pa.int32()))
        counters = {"mix_repeated_copies": int((epoch > 0).sum())}
        return Result(out, dropped, counters)

    def finish(self, plan: MixPlan) -> dict[str, Any]:
        report = {
            "unit": plan.unit,
            "size": plan.size,
            "max_epochs": self.params.max_epochs,
            "method": "weights"
            if self.resolved_weights() is not None
            else ("temperature" if self.params.temperature else "unimax"),
            "temperature": self.params.temperature,
            "seed": self.ctx.seed,
            "notes": plan.notes,
            "domains": plan.rows(),
        }
        write_bytes(str(self.ctx.report_dir / "mix_plan.json"), (json.dumps(report, indent=2) + "\n").encode())
        return {
            "mix": {
                r["domain"]: {"docs": r["selected_docs"], "share": r["realized_share"], "epochs": r["epochs"]}
                for r in report["domains"]
            }
        }


def register_cli(app: Any) -> None:
    """Add ``dcurate mix-fit`` (see :mod:`dcurate.stages.mix.fit`) to the CLI."""
    from dcurate.stages.mix.fit import register_cli as add_mix_fit

    add_mix_fit(app)
