"""The Python API: what the CLI does, as functions.

    from dcurate.api import curate
    stats = curate("data/raw", "data/clean", stages=[{"stage": "filter"}, {"stage": "dedup"}], workers=4)
"""

from __future__ import annotations

from typing import Any

from dcurate.core import params as P
from dcurate.core.options import RunOptions
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
    opts = P.build(RunOptions, options, "options")
    return run(inputs, output, parse_stages(stages or []), opts)


def run_recipe(path: str, **overrides: Any) -> dict[str, Any]:
    """Run a YAML recipe file; ``overrides`` are RunOptions fields that win over the file."""
    r = load(path, overrides)
    return run(r.inputs, r.output, r.stages, r.options)


def verify(output: str) -> list[str]:
    """Problems with the output folder ``output`` (an empty list when it is complete and
    consistent: every manifest shard present with its size and checksum, row counts equal to the
    stats, no foreign or stale data files). Raises :class:`dcurate.runner.outdir.NotAnOutput` when
    it is not a dcurate output or its manifest is unreadable."""
    return outdir.verify(output)


def clean(output: str) -> list[str]:
    """Remove the work files (markers, plans, intermediates) of the output folder ``output``;
    return the folders removed. The data shards and ``OUT/.dcurate`` reports stay."""
    return outdir.clean(output)


__all__ = ["clean", "curate", "run_recipe", "verify"]
