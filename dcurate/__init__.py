"""dcurate: curate large text corpora for language-model training.

Streaming stages (filter, dedup, quality, perplexity, select, mix) over sharded Parquet / JSONL,
chained by YAML recipes and run in parallel with resume. The functions below mirror the CLI's
commands (see :mod:`dcurate.api`); they are imported on first use, so ``import dcurate`` is cheap.
"""

from __future__ import annotations

from typing import Any

from dcurate.core.version import __version__

__all__ = [
    "__version__",
    "clean",
    "curate",
    "dedup",
    "filter",
    "mix",
    "mix_fit",
    "perplexity",
    "quality",
    "reshard",
    "run_recipe",
    "run_stage",
    "select",
    "stats",
    "train_lm",
    "train_quality",
    "verify",
    "DcurateError",
    "InputError",
    "RecipeError",
    "ModelError",
    "PlanError",
    "RunOptions",
]

_ERRORS = {"DcurateError", "InputError", "RecipeError", "ModelError", "PlanError"}


def __getattr__(name: str) -> Any:
    if name in _ERRORS:
        from dcurate.core import errors

        return getattr(errors, name)
    if name == "RunOptions":
        from dcurate.core.options import RunOptions

        return RunOptions
    if name in __all__:
        from dcurate import api

        return getattr(api, name)
    raise AttributeError(f"module 'dcurate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
