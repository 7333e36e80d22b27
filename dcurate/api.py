"""The Python API: every command of the CLI as a function.

    import dcurate
    stats = dcurate.curate("data/raw", "data/clean", stages=[{"stage": "filter"}, {"stage": "dedup"}], workers=4)
    dcurate.dedup("data/raw", "data/dedup", threshold=0.8, workers=2)
    dcurate.train_quality("models/q.bin", input=["labelled.jsonl"], label_field="label")

Stage functions take the stage's parameters (the recipe keys, e.g. ``threshold``) and the run
options of :class:`dcurate.core.options.RunOptions` (``workers``, ``seed``, ``text_field``, ...)
as keyword arguments, and return the run summary (what ``OUT/.dcurate/stats.json`` holds).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dcurate.core import params as core_params
from dcurate.core.errors import DcurateError
from dcurate.core.options import RunOptions
from dcurate.core.stage import get_stage
from dcurate.io import storage
from dcurate.runner import outdir
from dcurate.runner.driver import run
from dcurate.runner.recipe import load, parse_stages


def curate(
    inputs: str | list[str],
    output: str,
    stages: list[dict[str, Any]] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run ``stages`` (recipe-style mappings) over ``inputs`` into ``output``; return the stats.

    ``options`` are :class:`dcurate.core.options.RunOptions` fields (workers, seed, text_field, ...).
    """
    opts = core_params.build(RunOptions, options, "options")
    return run(inputs, output, parse_stages(stages or []), opts)


def run_recipe(path: str, **overrides: Any) -> dict[str, Any]:
    """Run a YAML recipe file; ``overrides`` are RunOptions fields that win over the file."""
    r = load(path, overrides)
    return run(r.inputs, r.output, r.stages, r.options)


def run_stage(name: str, inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """Run the single stage ``name``; ``kwargs`` mix its parameters and RunOptions fields, as the
    stage's subcommand does (``dcurate NAME IN... OUT --flags``)."""
    cls = get_stage(name, f"dcurate.{name}")
    stage_keys = {f.name for f in dataclasses.fields(cls.Params)}
    params = core_params.build(cls.Params, {k: v for k, v in kwargs.items() if k in stage_keys}, f"dcurate.{name}")
    opts = core_params.build(RunOptions, {k: v for k, v in kwargs.items() if k not in stage_keys}, f"dcurate.{name}")
    return run(inputs, output, [(name, params)], opts)


def filter(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:  # noqa: A001 - the command's name
    """``dcurate filter``: Gopher / C4 rules and ``keep_if`` expressions."""
    return run_stage("filter", inputs, output, **kwargs)


def dedup(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate dedup``: exact, MinHash-LSH or paragraph deduplication across all shards."""
    return run_stage("dedup", inputs, output, **kwargs)


def quality(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate quality``: fastText classifier scores (and thresholds / top fraction)."""
    return run_stage("quality", inputs, output, **kwargs)


def perplexity(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate perplexity``: CCNet-style n-gram LM perplexity."""
    return run_stage("perplexity", inputs, output, **kwargs)


def select(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate select``: DSIR importance resampling or ZIP-FIT towards a target set."""
    return run_stage("select", inputs, output, **kwargs)


def mix(inputs: str | list[str], output: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate mix``: domain mixtures (weights, temperature, UniMax, fitted) with exact counts."""
    return run_stage("mix", inputs, output, **kwargs)


def reshard(inputs: str | list[str], output: str, shard_size: int, **options: Any) -> dict[str, Any]:
    """``dcurate reshard``: cut inputs into shards of ``shard_size`` documents."""
    opts = core_params.build(RunOptions, {"shard_size": shard_size, **options}, "dcurate.reshard")
    return run(inputs, output, [], opts)


def stats(paths: str | list[str], text_field: str = "text", column: str | None = None) -> dict[str, Any]:
    """``dcurate stats``: documents, bytes, columns, value counts and numeric quantiles of a shard set."""
    from dcurate.report.stats import describe

    return describe(paths, text_field=text_field, column=column)


def train_quality(out: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate train-quality``: train a fastText quality classifier (see
    :func:`dcurate.stages.quality.stage.train_quality` for the parameters)."""
    from dcurate.stages.quality.stage import train_quality as _train

    return _train(out, **kwargs)


def train_lm(inputs: str | list[str], out: str, **kwargs: Any) -> dict[str, Any]:
    """``dcurate train-lm``: train a modified Kneser-Ney n-gram LM and write it as ARPA (see
    :func:`dcurate.stages.perplexity.stage.train_lm`)."""
    from dcurate.stages.perplexity.stage import train_lm as _train

    return _train(inputs, out, **kwargs)
def mix_fit(runs: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """``dcurate mix-fit``: fit a domain mixture from proxy runs (RegMix) and write a weights YAML,
    or propose mixtures to train proxy models on (see :func:`dcurate.stages.mix.fit.mix_fit`)."""
    from dcurate.stages.mix.fit import mix_fit as _fit

    return _fit(runs, **kwargs)


def verify(output: str) -> list[str]:
    """Problems with the output folder ``output`` (an empty list when it is complete and
    consistent: every manifest shard present with its size and checksum, row counts equal to the
    stats, no foreign or stale data files). Raises :class:`dcurate.runner.outdir.NotAnOutput` when
    it is not a dcurate output or its manifest is unreadable. ``output`` may be a URI
    (``s3://bucket/out``): its data and ``.dcurate/`` files are fetched into a temporary folder."""
    if storage.is_uri(output):
        import tempfile
        from pathlib import Path

        from dcurate.runner.remote import Mirror

        with tempfile.TemporaryDirectory(prefix="dcurate-verify-") as d:
            m = Mirror(output, Path(d) / "out")
            m.pull(skip_prefix=".dcurate/work/")
            return [p.replace(str(m.local), m.uri) for p in outdir.verify(m.local)]
    return outdir.verify(output)


def clean(output: str) -> list[str]:
    """Remove the work files (markers, plans, intermediates) of the output folder ``output``;
    return the folders removed. The data shards and ``OUT/.dcurate`` reports stay."""
    if storage.is_uri(output):
        import json

        from dcurate.runner.outdir import MANIFEST, WORK_ENTRIES, WORK_TAG

        try:
            m = json.loads(storage.read_bytes(f"{output.rstrip('/')}/.dcurate/{MANIFEST}"))
        except (DcurateError, ValueError):
            raise outdir.NotAnOutput(f"{output}: not a dcurate output (no .dcurate/{MANIFEST})") from None
        work = str(m.get("workdir") or f"{output.rstrip('/')}/.dcurate/work").rstrip("/")
        if not storage.is_uri(work) or not storage.exists(f"{work}/{WORK_TAG}"):
            return []
        removed = []
        for name in WORK_ENTRIES:
            if storage.list_files(f"{work}/{name}"):
                storage.remove_tree(f"{work}/{name}")
                removed.append(f"{work}/{name}")
        return removed
    return outdir.clean(output)
