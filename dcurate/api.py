"""The Python API: what the CLI does, as functions.

    from dcurate.api import curate
    stats = curate("data/raw", "data/clean", stages=[{"stage": "filter"}, {"stage": "dedup"}], workers=4)
"""

from __future__ import annotations

from typing import Any

from dcurate.core import params as P
from dcurate.core.options import RunOptions
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
