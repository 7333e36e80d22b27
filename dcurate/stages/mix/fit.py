"""``dcurate mix-fit``: fit a domain mixture from proxy training runs (RegMix), or propose the
mixtures to train proxy models on. :func:`mix_fit` does the work and returns a summary;
:func:`register_cli` adds the command, a thin wrapper around it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from dcurate.core.errors import InputError, RecipeError
from dcurate.core.paths import check_writes
from dcurate.io import storage
from dcurate.stages.mix import regmix

log = logging.getLogger("dcurate")

MIX_FIT_HELP = """Fit a domain mixture from proxy training runs (RegMix, Liu et al. 2024).

Reads runs (mixture weights + a target metric), fits LightGBM (deterministic; learning rate 0.01,
1,000 trees as in RegMix), reports the Spearman correlation on held-out runs when given, then
simulates --samples Dirichlet mixtures around --prior, averages the --top best predicted and writes
a weights YAML that `dcurate mix --weights-file` reads. With --propose N it writes N diverse
mixtures to train proxy models on instead (no runs needed: give --prior)."""

MIX_FIT_EXAMPLE = (
    "dcurate mix-fit --mixtures train_mixture.csv --metrics train_loss.csv "
    "--target metric/the_pile_pile_cc_val_loss --out weights.yaml"
)


def mix_fit(
    runs: str | None = None,
    *,
    mixtures: str | None = None,
    metrics: str | None = None,
    target: str | None = None,
    maximize: bool = False,
    domains: list[str] | str | None = None,
    test_mixtures: str | None = None,
    test_metrics: str | None = None,
    test_runs: str | None = None,
    out: str = "weights.yaml",
    samples: int = 100_000,
    top: int = 128,
    prior: str | None = None,
    propose: int | None = None,
    trees: int = 1000,
    learning_rate: float = 0.01,
    num_leaves: int = 31,
    seed: int = 0,
    keep_names: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit a mixture from runs and write the weights YAML ``out``, or with ``propose=N`` write N
    proposed mixtures to ``out``. Runs are one table (``runs``) or RegMix's two tables
    (``mixtures`` + ``metrics``); ``domains`` names the weight columns (a list or comma-separated).
    ``say`` receives progress lines (default: the ``dcurate`` logger).

    Returns a summary: ``out``, ``domains`` and ``proposed`` (the count) for ``propose``; otherwise
    ``out``, ``weights`` (as written), ``meta`` (the file's metadata: target, runs, model settings,
    ...), ``predicted`` and ``prior_predicted`` (the model's target for the fitted mixture and for
    the prior) and ``spearman`` (on the held-out runs; None without them)."""
    say = say or log.info
    check_writes(
        [x for x in (runs, mixtures, metrics, test_mixtures, test_metrics, test_runs, prior) if x],
        {"--out": out},
    )
    if storage.is_uri(out):  # written locally, then published atomically
        args = dict(locals())
        with storage.local_target(out) as args["out"]:
            res = mix_fit(**{k: v for k, v in args.items() if k != "say"}, say=say)
        return dict(res, out=out)
    if isinstance(domains, str):
        dom_list: list[str] | None = [d.strip() for d in domains.split(",") if d.strip()] or None
    else:
        dom_list = list(domains) if domains else None
    if propose is not None:
        return _propose(runs, mixtures, target, dom_list, prior, propose, seed, out, say)
    if runs is None and mixtures is None:
        raise RecipeError("mix-fit: give the runs: a table (RUNS) or --mixtures with --metrics")
    if target is None:
        raise RecipeError("mix-fit: --target COLUMN is required (the metric to optimise)")
    train = regmix.load_runs(runs, mixtures=mixtures, metrics=metrics, target=target, domains=dom_list)
    say(
        f"mix-fit: {len(train.y)} training runs, {len(train.domains)} domains, target {target} "
        f"({'higher' if maximize else 'lower'} is better)"
    )
    model = regmix.fit(train, trees=trees, learning_rate=learning_rate, num_leaves=num_leaves, seed=seed)
    meta: dict[str, Any] = {
        "target": target,
        "maximize": maximize,
        "train_runs": int(len(train.y)),
        "trees": trees,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "seed": seed,
    }
    rho = None
    if test_mixtures is not None or test_metrics is not None or test_runs is not None:
        if test_runs is not None:
            test = regmix.load_runs(test_runs, target=target, domains=train.domains)
            where = test_runs
        else:
            if test_mixtures is None or test_metrics is None:
                raise RecipeError("mix-fit: --test-mixtures and --test-metrics go together")
            test = regmix.load_runs(mixtures=test_mixtures, metrics=test_metrics, target=target)
            where = f"{test_mixtures} + {test_metrics}"
        test = regmix.align(test, train.domains, where)
        rho = regmix.spearman(regmix.predict(model, test.X), test.y)
        meta["test_runs"] = int(len(test.y))
        meta["test_spearman"] = round(rho, 6)
    given = regmix.parse_prior(prior, train.domains) if prior else None
    mean = train.X.mean(axis=0)
    prior_vec = np.array([given[d] for d in train.domains]) if given else mean / mean.sum()
    sim = regmix.simulate(model, train.domains, prior_vec, samples=samples, top=top, seed=seed, maximize=maximize)
    meta.update(
        {
            "samples": sim.samples,
            "top": sim.top,
            "predicted": round(sim.predicted, 6),
            "prior_predicted": round(sim.prior_predicted, 6),
            "prior": "given" if prior else "mean of the training mixtures",
        }
    )
    weights = sim.weights if keep_names else regmix.domain_names(sim.weights)
    if weights is not sim.weights:
        meta["columns"] = list(sim.weights)  # the weight columns of the runs, as named there
    regmix.write_weights_file(out, weights, meta)
    return {
        "out": out,
        "weights": dict(weights),
        "meta": meta,
        "predicted": float(sim.predicted),
        "prior_predicted": float(sim.prior_predicted),
        "spearman": None if rho is None else float(rho),
    }


def _propose(
    runs: str | None,
    mixtures: str | None,
    target: str | None,
    dom_list: list[str] | None,
    prior: str | None,
    count: int,
    seed: int,
    out: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """``--propose N``: N diverse mixtures around the prior (given, or the runs' mean mixture)."""
    if mixtures is not None or runs is not None:
        if runs is not None and target is not None:
            train = regmix.load_runs(runs, target=target, domains=dom_list)
        else:  # weights are enough for a prior; no metrics needed
            train = _mixtures_only(mixtures if mixtures is not None else str(runs), dom_list)
        names = train.domains
        mean = train.X.mean(axis=0)
        centre = (regmix.parse_prior(prior, names) or {}) if prior else dict(zip(names, mean / mean.sum(), strict=True))
    else:
        if prior is None:
            raise RecipeError("mix-fit --propose: give --prior (domain weights) or training runs to take it from")
        centre = regmix.parse_prior(prior, dom_list) or {}
        names = list(centre)
    mixes = regmix.propose(np.array([centre[d] for d in names]), count, seed=seed)
    regmix.write_mixtures(out, names, mixes)
    say(f"mix-fit: wrote {len(mixes)} proposed mixtures of {len(names)} domains to {out}")
    return {"out": out, "domains": list(names), "proposed": len(mixes)}


def _mixtures_only(path: str, domains: list[str] | None) -> regmix.Runs:
    df = regmix._read_any(path)  # noqa: SLF001 - same package
    cols = domains or [c for c in df.columns if c != "index" and df[c].dtype.is_numeric()]
    if not cols:
        raise InputError(f"{path}: no numeric weight columns")
    weights = np.column_stack([regmix._numeric(df, c, str(path)) for c in cols])  # noqa: SLF001
    regmix._check_weights(weights, cols, str(path))  # noqa: SLF001
    return regmix.Runs(X=weights, y=np.zeros(len(weights)), domains=cols)


def register_cli(app: Any) -> None:
    """Add ``dcurate mix-fit`` to the CLI."""
    import typer

    @app.command(
        "mix-fit",
        help=MIX_FIT_HELP,
        short_help="Fit a mixture from proxy runs (RegMix) or propose runs.",
        epilog=f"Example: {MIX_FIT_EXAMPLE}",
    )
    def mix_fit_command(
        runs: str | None = typer.Argument(
            None, help="One table of runs: weight columns + the --target column (.csv/.parquet/.jsonl)."
        ),
        mixtures: str | None = typer.Option(
            None, "--mixtures", help="RegMix layout: mixtures table (index + one column per domain)."
        ),
        metrics: str | None = typer.Option(
            None, "--metrics", help="RegMix layout: metrics table (index + metric columns)."
        ),
        target: str | None = typer.Option(
            None, "--target", help="Metric column to optimise (e.g. a validation loss)."
        ),
        maximize: bool = typer.Option(
            False, "--maximize/--minimize", help="Higher target is better (default: lower, a loss)."
        ),
        domains: str | None = typer.Option(
            None,
            "--domains",
            help="Weight columns, comma-separated (default: every numeric column but index/target).",
        ),
        test_mixtures: str | None = typer.Option(
            None,
            "--test-mixtures",
            help="Held-out runs (RegMix layout) to report Spearman on; never used for fitting.",
        ),
        test_metrics: str | None = typer.Option(None, "--test-metrics", help="Metrics of the held-out runs."),
        test_runs: str | None = typer.Option(
            None,
            "--test-runs",
            help="Held-out runs as one table (instead of --test-mixtures/--test-metrics).",
        ),
        out: str = typer.Option(
            "weights.yaml",
            "--out",
            "-o",
            help="Weights YAML to write (with --propose: mixtures .csv or .yaml).",
        ),
        samples: int = typer.Option(
            100_000, "--samples", min=1, help="Candidate mixtures simulated (RegMix: 100,000)."
        ),
        top: int = typer.Option(
            128, "--top", min=1, help="Best-predicted candidates averaged (RegMix: 128)."
        ),
        prior: str | None = typer.Option(
            None,
            "--prior",
            help="Centre of the Dirichlet: a=0.3,b=0.7 or a weights file (default: mean of the training mixtures).",
        ),
        propose: int | None = typer.Option(
            None, "--propose", min=1, help="Write N diverse mixtures to train proxy models on, and stop."
        ),
        trees: int = typer.Option(1000, "--trees", min=1, help="LightGBM boosting rounds (RegMix: 1,000)."),
        learning_rate: float = typer.Option(
            0.01, "--learning-rate", min=1e-6, help="LightGBM learning rate (RegMix: 0.01)."
        ),
        num_leaves: int = typer.Option(
            31, "--num-leaves", min=2, help="LightGBM leaves per tree (LightGBM default, as RegMix)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the model and of the simulated mixtures."),
        keep_names: bool = typer.Option(
            False, "--keep-names",
            help="Write the runs' column names as they are (default: without their common prefix, e.g. "
            "RegMix's train_the_pile_pile_cc becomes pile_cc, the domain value `mix` matches).",
        ),
    ) -> None:
        def say(msg: str) -> None:
            print(msg, file=sys.stderr)

        res = mix_fit(
            runs,
            mixtures=mixtures,
            metrics=metrics,
            target=target,
            maximize=maximize,
            domains=domains,
            test_mixtures=test_mixtures,
            test_metrics=test_metrics,
            test_runs=test_runs,
            out=out,
            samples=samples,
            top=top,
            prior=prior,
            propose=propose,
            trees=trees,
            learning_rate=learning_rate,
            num_leaves=num_leaves,
            seed=seed,
            keep_names=keep_names,
            say=say,
        )
        if propose is not None:
            return
        meta = res["meta"]
        if "test_spearman" in meta:
            print(
                f"mix-fit: held-out runs: {meta['test_runs']}; spearman {res['spearman']:.4f} "
                f"(predicted vs true {target})"
            )
        best = sorted(res["weights"].items(), key=lambda kv: -kv[1])[:8]
        say(
            f"mix-fit: predicted {target}: {res['predicted']:.4f} for the fitted mixture "
            f"vs {res['prior_predicted']:.4f} for the prior"
        )
        say("mix-fit: top domains: " + ", ".join(f"{k}={v:.3f}" for k, v in best))
        say(f"mix-fit: wrote {out} (use: dcurate mix IN OUT --weights-file {out})")
