"""Fitting a data mixture from proxy training runs: RegMix (Liu et al. 2024, arXiv:2407.01492).

RegMix trains many small proxy models on different domain mixtures, fits a regression from the
mixture weights to a target metric (e.g. the validation loss on a domain one cares about), then
*simulates*: it predicts the metric for a large number of candidate mixtures drawn from a Dirichlet
around the natural distribution of the corpus and averages the best-ranked candidates into the
mixture used for the large run. This module implements both halves of that loop:

* :func:`propose` -- the first half: N diverse mixtures to train proxy models on;
* :func:`load_runs`, :func:`fit`, :func:`spearman`, :func:`simulate` -- the second half.

Defaults follow the paper and its published code (github.com/sail-sg/regmix): LightGBM with
learning rate 0.01 and 1,000 trees, 100,000 simulated mixtures, top 128 averaged; Dirichlet
concentrations ``prior * s`` with the strength ``s`` drawn from 15 log-spaced values in [0.1, 5].
Everything is seeded: the same inputs and seed give byte-identical weights files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from dcurate.core import weights
from dcurate.core.errors import InputError, ModelError, RecipeError
from dcurate.core.weights import parse_weights

# RegMix's published procedure (regression_fitting/regression.ipynb): lr 1e-2, 1,000 rounds.
# Measured on ../shared/regmix 1M runs (Pile-CC loss): 300 trees 0.984, 1,000 trees 0.990.
DEFAULT_TREES = 1000
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_NUM_LEAVES = 31  # LightGBM's default, as used by RegMix
DEFAULT_SAMPLES = 100_000  # RegMix: candidate mixtures simulated
DEFAULT_TOP = 128  # RegMix: best-ranked candidates averaged
# RegMix mixture_config/synthesize_mixture.py: Dirichlet strength range and grid size.
MIN_STRENGTH, MAX_STRENGTH, N_STRENGTHS = 0.1, 5.0, 15
# Weights below this are set to 0 in proposed mixtures (RegMix's MINIMUM sampling rate 2e-4).
PROPOSE_MINIMUM = 2e-4
SUM_TOLERANCE = 0.02  # proxy-run mixtures are often rounded to 3 decimals (RegMix: 0.996-1.003)


@dataclass
class Runs:
    """Proxy runs: ``X[i, j]`` is run i's weight of ``domains[j]``; ``y[i]`` its target metric."""

    X: np.ndarray
    y: np.ndarray
    domains: list[str]
    ids: list[str] = field(default_factory=list)


# -- reading ----------------------------------------------------------------------------------


def _read_any(path: str | Path) -> pl.DataFrame:
    from dcurate.io import storage

    if storage.is_uri(str(path)):  # read from a cached local copy; errors name the URI
        with storage.fetched(str(path)) as local:
            return _read_any(local)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    name = p.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pl.read_csv(p, infer_schema_length=10_000)
        if name.endswith((".tsv", ".tsv.gz")):
            return pl.read_csv(p, separator="\t", infer_schema_length=10_000)
        if name.endswith((".parquet", ".pq")):
            return pl.read_parquet(p)
        if name.endswith((".jsonl", ".ndjson", ".json")):
            return pl.read_ndjson(p)
    except Exception as e:  # noqa: BLE001 - polars raises many types; report them as input errors
        raise InputError(f"{p}: cannot read the table: {e}") from None
    raise InputError(f"{p}: unknown table format; use .csv, .tsv, .parquet or .jsonl")


def _numeric(df: pl.DataFrame, col: str, path: str) -> np.ndarray:
    s = df[col]
    if not s.dtype.is_numeric():
        raise InputError(f"{path}: column '{col}' must be numeric; got {s.dtype}")
    if s.null_count():
        row = int(np.flatnonzero(s.is_null().to_numpy())[0])
        raise InputError(f"{path}: row {row + 1}: column '{col}' is empty")
    return s.cast(pl.Float64).to_numpy()


def _check_weights(X: np.ndarray, domains: list[str], where: str) -> None:
    if X.size and (X < 0).any():
        i, j = (int(v) for v in np.argwhere(X < 0)[0])
        raise InputError(f"{where}: row {i + 1}: weight of '{domains[j]}' is negative ({X[i, j]})")
    sums = X.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if len(bad):
        i = int(bad[0])
        raise InputError(
            f"{where}: row {i + 1}: the weights of {len(domains)} domain columns sum to {sums[i]:.4f}, "
            f"not 1. Hint: name the weight columns with --domains (columns used: {', '.join(domains)})"
        )


def load_runs(
    table: str | Path | None = None,
    *,
    mixtures: str | Path | None = None,
    metrics: str | Path | None = None,
    target: str,
    domains: Sequence[str] | None = None,
    join_on: str = "index",
) -> Runs:
    """Read proxy runs from one table (weight columns + ``target``) or from RegMix's layout: a
    mixtures table and a metrics table joined on ``join_on`` (``index``).

    Weight columns are ``domains`` when given; else every numeric column of the mixtures table
    except ``join_on`` (RegMix layout), or every numeric column except ``join_on`` and ``target``
    (one table). Each run's weights must sum to 1 within 0.02 (published mixtures are rounded).
    """
    if (table is None) == (mixtures is None):
        raise RecipeError("give either one runs table or --mixtures with --metrics")
    if mixtures is not None:
        if metrics is None:
            raise RecipeError("--mixtures needs --metrics (the table with the target column)")
        mdf, ldf = _read_any(mixtures), _read_any(metrics)
        where = f"{mixtures} + {metrics}"
        for df, p in ((mdf, mixtures), (ldf, metrics)):
            if join_on not in df.columns:
                raise InputError(
                    f"{p}: no '{join_on}' column to join the two tables on; columns: {', '.join(df.columns)}"
                )
        if target not in ldf.columns:
            raise InputError(f"{metrics}: no target column '{target}'; columns: {', '.join(ldf.columns)}")
        if domains is None:
            domains = [c for c in mdf.columns if c != join_on and mdf[c].dtype.is_numeric()]
        ldf = ldf.select(join_on, pl.col(target).alias("__target__"))
        try:
            df = mdf.join(ldf, on=join_on, how="inner").sort(join_on)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{where}: cannot join on '{join_on}': {e}") from None
        unmatched = mdf.height - df.height
        if df.height == 0:
            raise InputError(f"{where}: no '{join_on}' value is in both tables")
        if unmatched:
            import logging

            logging.getLogger("dcurate").warning(
                "%s: %d mixtures have no metrics row; ignored", where, unmatched
            )
        target_col, src = "__target__", str(metrics)
    else:
        df = _read_any(table)  # type: ignore[arg-type]
        where = src = str(table)
        if target not in df.columns:
            raise InputError(f"{table}: no target column '{target}'; columns: {', '.join(df.columns)}")
        if domains is None:
            domains = [c for c in df.columns if c not in (join_on, target) and df[c].dtype.is_numeric()]
        target_col = target
    domains = list(domains)
    missing = [d for d in domains if d not in df.columns]
    if missing:
        raise InputError(
            f"{where}: no weight column {', '.join(map(repr, missing))}; columns: {', '.join(df.columns)}"
        )
    if not domains:
        raise InputError(f"{where}: no numeric weight columns found")
    X = np.column_stack([_numeric(df, d, where) for d in domains])
    y = _numeric(df, target_col, src)
    if not np.isfinite(y).all():
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise InputError(f"{src}: row {i + 1}: target '{target}' is not a finite number ({y[i]})")
    _check_weights(X, domains, where)
    ids = (
        [str(v) for v in df[join_on].to_list()]
        if join_on in df.columns
        else [str(i + 1) for i in range(len(y))]
    )
    return Runs(X=X, y=y, domains=domains, ids=ids)


def align(runs: Runs, domains: Sequence[str], where: str) -> Runs:
    """Reorder ``runs`` columns to ``domains`` (test runs must have the training domains)."""
    idx = {d: i for i, d in enumerate(runs.domains)}
    missing = [d for d in domains if d not in idx]
    if missing:
        raise InputError(f"{where}: lacks the training domains {', '.join(missing)}")
    extra = [d for d in runs.domains if d not in set(domains)]
    if extra:
        raise InputError(f"{where}: has domains the training runs lack: {', '.join(extra)}")
    return Runs(X=runs.X[:, [idx[d] for d in domains]], y=runs.y, domains=list(domains), ids=runs.ids)


# -- regression -------------------------------------------------------------------------------


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError:  # pragma: no cover - lightgbm is a runtime dependency
        raise ModelError("mix-fit needs LightGBM: pip install 'lightgbm>=4.3'") from None
    return lightgbm


def fit(
    runs: Runs,
    *,
    trees: int = DEFAULT_TREES,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    num_leaves: int = DEFAULT_NUM_LEAVES,
    seed: int = 0,
) -> Any:
    """Fit the RegMix regression (LightGBM gradient-boosted trees, L2 objective) of ``y`` on ``X``.

    Deterministic: ``deterministic=True``, row-wise histograms and one thread, so the model (and
    every prediction) is the same on every machine for the same data and seed. All training runs
    are used; there is no early stopping on held-out runs.
    """
    if len(runs.y) < 2:
        raise InputError(f"mix-fit needs at least 2 proxy runs to fit; got {len(runs.y)}")
    lgb = _lightgbm()
    params = {
        "objective": "regression",
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min(20, max(1, len(runs.y) // 10)),
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": 1,
        "verbosity": -1,
    }
    data = lgb.Dataset(
        runs.X,
        label=runs.y,
        feature_name=[f"w{i}" for i in range(len(runs.domains))],
        params={"verbosity": -1},
    )
    return lgb.train(params, data, num_boost_round=trees)


def predict(model: Any, X: np.ndarray, batch: int = 20_000) -> np.ndarray:
    """Predictions for the rows of ``X`` (in batches, one thread: deterministic)."""
    out = np.empty(len(X), dtype=np.float64)
    for s in range(0, len(X), batch):
        out[s : s + batch] = model.predict(X[s : s + batch], num_threads=1)
    return out


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(a, kind="stable")
    sa = a[order]
    starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])
    ends = np.r_[starts[1:], len(a)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); nan when undefined."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError("spearman: arrays differ in length")
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# -- sampling mixtures --------------------------------------------------------------------------


def parse_prior(
    spec: str | dict[str, float] | None, domains: Sequence[str] | None = None
) -> dict[str, float] | None:
    """A prior given as ``a=0.3,b=0.7``, a mapping, or a YAML/JSON weights file (see
    :func:`read_weights_file`). Normalised to sum 1; domains of ``domains`` not named get 0."""
    if spec is None:
        return None
    if isinstance(spec, dict) or "=" in spec or (":" in spec and not Path(spec).exists()):
        w = parse_weights(spec, "--prior")
    else:
        w = read_weights_file(spec)
    if any(v < 0 for v in w.values()):
        raise RecipeError(f"--prior: weights must be >= 0; got {w}")
    if domains is not None:
        unknown = [k for k in w if k not in set(domains)]
        if unknown:
            raise RecipeError(
                f"--prior: unknown domains {', '.join(unknown)}; the runs have {', '.join(domains)}"
            )
        w = {d: w.get(d, 0.0) for d in domains}
    total = sum(w.values())
    if total <= 0:
        raise RecipeError("--prior: the weights sum to 0")
    return {k: v / total for k, v in w.items()}


def dirichlet_candidates(prior: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` mixtures from Dirichlet(prior * s), the strength ``s`` drawn per sample from 15
    log-spaced values in [0.1, 5] (small s: sparse, extreme mixtures; large s: near the prior).
    Domains with prior 0 stay at 0."""
    prior = np.asarray(prior, dtype=np.float64)
    active = prior > 0
    p = prior[active] / prior[active].sum()
    strengths = np.logspace(math.log10(MIN_STRENGTH), math.log10(MAX_STRENGTH), N_STRENGTHS)
    s = strengths[rng.integers(0, N_STRENGTHS, size=n)]
    # Dirichlet via normalised Gamma draws; alpha = p * s. Tiny alphas underflow to exact zeros
    # (a whole row may); those rows are redrawn from the prior's own strength below.
    g = rng.standard_gamma(p[None, :] * s[:, None])
    tot = g.sum(axis=1)
    empty = ~(tot > 0)
    if empty.any():
        g[empty] = rng.standard_gamma(np.broadcast_to(p, (int(empty.sum()), len(p))))
        tot = g.sum(axis=1)
    out = np.zeros((n, len(prior)), dtype=np.float64)
    out[:, active] = g / tot[:, None]
    return out


@dataclass
class Simulation:
    weights: dict[str, float]
    predicted: float  # model's prediction for the averaged mixture
    top_mean: float  # mean prediction of the averaged candidates
    prior_predicted: float
    samples: int
    top: int


def simulate(
    model: Any,
    domains: Sequence[str],
    prior: np.ndarray,
    *,
    samples: int = DEFAULT_SAMPLES,
    top: int = DEFAULT_TOP,
    seed: int = 0,
    maximize: bool = False,
) -> Simulation:
    """RegMix's simulation: predict the metric of ``samples`` Dirichlet mixtures around ``prior``,
    average the ``top`` best (lowest unless ``maximize``) into the recommended mixture."""
    if samples < 1 or top < 1:
        raise RecipeError("--samples and --top must be >= 1")
    top = min(top, samples)
    rng = np.random.default_rng([seed, 0x6D6978])
    cand = dirichlet_candidates(prior, samples, rng)
    pred = predict(model, cand)
    score = -pred if maximize else pred
    best = np.argsort(score, kind="stable")[:top]
    mix = cand[best].mean(axis=0)
    mix = mix / mix.sum()
    return Simulation(
        weights=dict(zip(domains, (float(v) for v in mix), strict=True)),
        predicted=float(predict(model, mix[None, :])[0]),
        top_mean=float(pred[best].mean()),
        prior_predicted=float(predict(model, np.asarray(prior, dtype=np.float64)[None, :])[0]),
        samples=samples,
        top=top,
    )


def propose(prior: np.ndarray, n: int, *, seed: int = 0, minimum: float = PROPOSE_MINIMUM) -> np.ndarray:
    """``n`` diverse mixtures to train proxy models on (the first half of the RegMix loop).

    Candidates: ``100 n`` Dirichlet draws around ``prior`` (:func:`dirichlet_candidates`); weights
    below ``minimum`` are zeroed and each mixture renormalised and rounded to multiples of
    ``minimum`` (as RegMix does). Diversity rule: candidates are visited in a seeded random order
    and one is accepted only when its L1 distance to every accepted mixture is at least ``d``;
    ``d`` starts at 0.5 and halves until ``n`` mixtures are accepted. This keeps the Dirichlet's
    spread while ruling out near-duplicates (RegMix removes only exact duplicates).
    """
    if n < 1:
        raise RecipeError(f"--propose must be >= 1; got {n}")
    rng = np.random.default_rng([seed, 0x70726F70])
    cand = dirichlet_candidates(prior, 100 * n, rng)
    cand = np.where(cand < minimum, 0.0, cand)
    sums = cand.sum(axis=1, keepdims=True)
    cand = np.divide(cand, sums, out=np.zeros_like(cand), where=sums > 0)
    cand = np.round(cand / minimum) * minimum
    cand = cand[cand.sum(axis=1) > 0]
    cand = cand / cand.sum(axis=1, keepdims=True)
    cand = np.unique(np.round(cand, 9), axis=0)
    cand = cand[rng.permutation(len(cand))]
    if len(cand) < n:
        raise RecipeError(f"--propose {n}: only {len(cand)} distinct mixtures exist around this prior")
    d = 0.5
    while True:
        chosen = _poisson_disk(cand, n, d)
        if len(chosen) >= n or d < 1e-9:
            return cand[chosen[:n]]
        d /= 2


def _poisson_disk(cand: np.ndarray, n: int, d: float) -> list[int]:
    chosen: list[int] = []
    mind = np.full(len(cand), np.inf)
    for i in range(len(cand)):
        if mind[i] < d:
            continue
        chosen.append(i)
        if len(chosen) == n:
            break
        # update every candidate's distance to the accepted set (vectorised over candidates)
        mind = np.minimum(mind, np.abs(cand - cand[i]).sum(axis=1))
    return chosen


# -- weights files ------------------------------------------------------------------------------


def read_weights_file(path: str | Path) -> dict[str, float]:
    """Domain weights from YAML/JSON: a mapping ``{domain: weight}``, or one with a ``weights:``
    mapping (the file ``mix-fit`` writes, with its metadata keys beside it)."""
    return weights.read_file(path, "weights file")


def rounded_weights(weights: dict[str, float], digits: int = 6) -> dict[str, float]:
    """Round to ``digits`` decimals so that the printed values sum to exactly 1 (the rounding
    residue goes to the largest weight)."""
    scale = 10**digits
    units = {k: round(v * scale) for k, v in weights.items()}
    big = max(units, key=lambda k: (units[k], k))
    units[big] += scale - sum(units.values())
    return {k: u / scale for k, u in units.items()}


def write_weights_file(
    path: str | Path, weights: dict[str, float], meta: dict[str, Any] | None = None
) -> None:
    """Write a weights YAML that ``dcurate mix --weights FILE`` reads."""
    doc: dict[str, Any] = {"weights": rounded_weights(weights)}
    if meta:
        doc["mix_fit"] = meta
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "# domain weights written by `dcurate mix-fit` (RegMix, Liu et al. 2024)\n"
    text += yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(p)


def write_mixtures(path: str | Path, domains: Sequence[str], mixtures: np.ndarray) -> None:
    """Write proposed mixtures: ``.csv`` in RegMix's layout (``index`` 1..N + one column per
    domain), or ``.yaml``/``.yml`` (a list of weight mappings)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    mixtures = np.round(mixtures, 6)
    if p.name.lower().endswith((".yaml", ".yml")):
        rows = [
            {"index": i + 1, "weights": {d: float(v) for d, v in zip(domains, row, strict=True)}}
            for i, row in enumerate(mixtures)
        ]
        p.write_text(yaml.safe_dump(rows, sort_keys=False), encoding="utf-8")
        return
    df = pl.DataFrame(
        {"index": np.arange(1, len(mixtures) + 1), **{d: mixtures[:, j] for j, d in enumerate(domains)}}
    )
    df.write_csv(p)


def domain_names(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` keyed by domain names as they appear in data: without the prefix every column
    shares (up to an underscore), e.g. RegMix's ``train_the_pile_pile_cc`` -> ``pile_cc``."""
    names = list(weights)
    if len(names) < 2:
        return weights
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind("_") + 1]
    if not prefix or any(len(n) == len(prefix) for n in names):
        return weights
    return {n[len(prefix):]: w for n, w in weights.items()}
