"""Checks of a run against its input before any work: every column a stage reads (a ``keep_if``
expression's columns, ``keep: max:COLUMN``...) must be in the input or added by an earlier stage.
Runs in ``--dry-run`` too, so a recipe that would fail an hour in fails at once, listing every
problem."""

from __future__ import annotations

import logging
from typing import Any

import pyarrow.parquet as pq

from dcurate.core.errors import RecipeError
from dcurate.core.params import did_you_mean
from dcurate.io import STDIN, BatchReader, Piece, Shard, storage

log = logging.getLogger("dcurate")


def input_columns(shard: Shard, text_field: str, id_field: str) -> list[str] | None:
    """The columns of the first shard (from Parquet metadata or the first JSONL block); None for
    stdin or a shard that cannot be read (the run itself then reports the problem)."""
    if shard.path == STDIN:
        return None
    try:
        if shard.fmt == "parquet":
            names = list(pq.ParquetFile(storage.parquet_source(shard.path)).schema_arrow.names)
        else:
            reader = BatchReader(Piece(shard), text_field, id_field, "skip", require_text=False)
            first = next(iter(reader), None)
            if first is None:
                return None
            names = list(first.schema.names)
    except Exception:  # noqa: BLE001 - reading errors are reported, with line numbers, by the run
        return None
    if id_field not in names:
        names.append(id_field)  # added by the reader
    return names


def check_columns(stages: list[tuple[str, Any]], columns: list[str] | None, text_field: str = "text",
                  overwrite: bool = False, source: str = "input") -> None:
    """``stages``: (label, Stage) in recipe order. Raises one RecipeError naming every missing
    column; warns about a stage that adds a column already there (unless ``overwrite``)."""
    if columns is None:
        return
    have: set[str] | None = set(columns)
    errors = []
    if text_field not in columns:
        errors.append(f"{source}: no text field '{text_field}'{did_you_mean(text_field, set(columns))}; "
                      f"columns: {', '.join(columns)} (--text-field names another)")
    for label, stage in stages:
        if have is None:
            break
        for col in sorted(stage.columns_read() - have):
            errors.append(f"{label}: unknown column '{col}'{did_you_mean(col, have)}: not in the input nor "
                          f"added by an earlier stage; columns: {', '.join(sorted(have))}")
        added = stage.columns_added()
        if added and not overwrite:
            for col in sorted(added & have - {text_field}):
                log.warning("%s: column '%s' is already there and will be overwritten "
                            "(--overwrite-column to do this without a warning)", label, col)
        have = None if added is None else have | added
    if errors:
        raise RecipeError("\n".join(errors))


def check_run(runner: Any, plan: Any) -> None:
    """The runner's hook: check the recipe against the first input shard's columns."""
    if not plan.shards:
        return
    o = runner.opts
    cols = input_columns(plan.shards[0], o.text_field, o.id_field)
    check_columns([(f"stages[{s.index}] ({s.name})", s.build()) for s in plan.stages], cols, o.text_field,
                  o.overwrite_column, plan.shards[0].path)
