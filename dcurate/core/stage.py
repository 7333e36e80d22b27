"""The stage interface every dcurate stage implements, and the stage registry.

Two kinds of stage:

* **map** stages see one record batch at a time (:meth:`Stage.process`): filters, scorers,
  annotators. Consecutive map stages of a recipe are fused into one pass per shard.
* **global** stages need a view of all shards. They run as phases, each a plain function of
  (shard, params, plan), so the same code runs in a process pool or as Ray tasks:

  1. ``scan(batches, shard, round, plan) -> partial``, once per shard piece (in parallel);
  2. ``reduce(partials, round, plan) -> plan``, once, in the driver (it may fan work out with
     ``self.ctx.map``); steps 1-2 repeat for ``self.rounds`` rounds;
  3. ``apply(batch, shard, pos, plan) -> Result``, per batch of every shard piece (in parallel).

  The data a global stage scans is exactly the data it later applies its plan to, in the same
  order: ``pos`` (row of the batch's first document within the piece) lines the two up.

Stage objects are rebuilt in each worker from (name, params, context), so they must not hold
open resources when pickled: load models in :meth:`Stage.setup`, which runs once per process.
Partials and plans are stored as safe work files (dcurate.core.workfile: JSON values, numpy arrays
and registered dataclasses; never pickles) and must be small; large data goes to files under
``self.ctx.workdir`` (a private folder per stage, shared by all workers), named with
``shard.key`` so that a re-run overwrites rather than duplicates them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from dcurate.core.errors import RecipeError
from dcurate.core.names import STAGE_NAMES

REASON_COLUMN = "dcurate_reason"

#: Drop reasons renamed after 0.1.0 to one pattern, ``<stage>.below_cutoff`` = outside the corpus-wide
#: top-k. The old names stay readable for one release: ``--keep-if``/``--where`` comparisons of
#: ``dcurate_reason`` treat an old and a new name as the same reason (on old and new rejected data).
REASON_ALIASES: dict[str, str] = {
    "quality.below_top_fraction": "quality.below_cutoff",
    "perplexity.keep_top": "perplexity.below_cutoff",
    "select.not_selected": "select.below_cutoff",
}


def canonical_reason(name: str) -> str:
    """The current name of a drop reason (an old name from :data:`REASON_ALIASES` is renamed)."""
    return REASON_ALIASES.get(name, name)


@dataclass(frozen=True)
class ShardInfo:
    """Where a batch comes from. A shard is one input file; a piece is the unit of parallel work
    (a whole file, a range of Parquet row groups or a byte range of plain JSONL)."""

    stem: str  # output name without extension, unique in the run (may contain '/')
    index: int  # shard order in the run (input order)
    piece: int = 0  # piece number within the shard
    n_pieces: int = 1
    path: str = ""  # file the piece is read from

    @property
    def key(self) -> str:
        """A file-name-safe unique key for this piece (for per-shard work files)."""
        return f"{self.index:06d}-{self.piece:04d}"

    def order(self, row: int) -> tuple[int, int, int]:
        """Total order of documents in the run: (shard, piece, row within piece)."""
        return (self.index, self.piece, row)


@dataclass
class Result:
    """What a map stage's ``process`` or a global stage's ``apply`` returns for one batch.

    ``batch`` holds the documents that go on (annotated, possibly with modified text, possibly
    more rows than came in); ``dropped`` the ones removed, with a ``dcurate_reason`` column.
    ``counters`` are extra integer statistics summed over the run (``{"clusters": 3}``).
    """

    batch: pa.RecordBatch
    dropped: pa.RecordBatch | None = None
    counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def keep_where(
        cls,
        batch: pa.RecordBatch,
        keep: np.ndarray | pa.Array,
        reason: str | np.ndarray | Sequence[str | None],
        counters: dict[str, int] | None = None,
    ) -> Result:
        """Split ``batch`` by a boolean mask; dropped rows get ``reason`` (one string for all, or
        one per row of ``batch``, read at the dropped positions)."""
        keep_np = np.asarray(keep, dtype=bool)
        if keep_np.all():
            return cls(batch, None, counters or {})
        keep_arr = pa.array(keep_np, type=pa.bool_())
        kept = batch.filter(keep_arr)
        drop_idx = np.flatnonzero(~keep_np)
        dropped = batch.take(pa.array(drop_idx, type=pa.int64()))
        if isinstance(reason, str):
            reasons = pa.array([reason] * len(drop_idx), type=pa.string())
        else:
            reasons = pa.array(np.asarray(reason, dtype=object)[drop_idx], type=pa.string())
        dropped = with_column(dropped, REASON_COLUMN, reasons)
        return cls(kept, dropped, counters or {})


def with_column(batch: pa.RecordBatch, name: str, values: pa.Array | np.ndarray | list) -> pa.RecordBatch:
    """Return ``batch`` with column ``name`` set (replaced if present, appended otherwise)."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    idx = batch.schema.get_field_index(name)
    if idx >= 0:
        return batch.set_column(idx, name, arr)
    return batch.append_column(name, arr)


@dataclass
class StageContext:
    """What a stage knows about the run it is part of."""

    text_field: str = "text"
    id_field: str = "id"
    seed: int = 0
    index: int = 0  # position of the stage in the recipe
    workdir: Path = field(default_factory=lambda: Path("."))  # private folder of this stage
    out_dir: Path | None = None  # the run's OUT directory (None when writing to stdout)
    workers: int = 1
    # Parallel map over the run's executor (ordered results); set by the runner in the driver.
    mapper: Callable[[Callable, list], list] | None = field(default=None, repr=False, compare=False)

    @property
    def report_dir(self) -> Path:
        """Where a stage writes reports that belong to the output (cluster table, mix plan):
        ``OUT/.dcurate`` (the stage's work folder when writing to stdout). Never data extensions."""
        return Path(self.out_dir) / ".dcurate" if self.out_dir is not None else Path(self.workdir)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger("dcurate")

    def map(self, fn: Callable[[Any], Any], items: list) -> list:
        """Run ``fn`` over ``items`` on the run's workers (in the driver only; ``fn`` must be a
        picklable top-level function). Results come back in the order of ``items``."""
        if self.mapper is None or len(items) <= 1:
            return [fn(x) for x in items]
        return self.mapper(fn, items)

    @contextlib.contextmanager
    def mapping(self, mapper: Callable[[Callable, list], list]) -> Iterator[StageContext]:
        """Inside the block, :meth:`map` runs on ``mapper`` (the runner passes its executor's
        ``map``); afterwards, also when the block raises, the previous mapper is back."""
        previous, self.mapper = self.mapper, mapper
        try:
            yield self
        finally:
            self.mapper = previous

    def for_worker(self) -> StageContext:
        return dataclasses.replace(self, mapper=None)


class Stage:
    """Base class. Subclasses set ``name``, ``Params`` (a dataclass built with
    :func:`dcurate.core.params.param`), ``summary`` (one line), ``example`` (one CLI example) and
    implement ``process`` (map) or ``scan``/``reduce``/``apply`` (global)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type]
    summary: ClassVar[str] = ""
    example: ClassVar[str] = ""
    kind: str = "map"  # "map" or "global"; a subclass may make it a property of its params
    rounds: int = 1  # scan/reduce rounds of a global stage

    def __init__(self, params: Any, ctx: StageContext):
        self.params = params
        self.ctx = ctx

    # -- lifecycle ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Driver, once, before any data is read: validate models/targets, print plans, build
        anything all workers need (write it under ``self.ctx.workdir``). Errors raised here stop
        the run before work starts."""

    def setup(self) -> None:
        """Each worker process, once, before its first batch (load models here)."""

    def preload_modules(self) -> list[str]:
        """Modules the pool's fork server imports and warms for this stage (so that workers fork
        ready to run it)."""
        return [type(self).__module__]

    def describe(self) -> dict[str, Any]:
        """Resolved parameters shown by ``--dry-run`` and written to the manifest."""
        return dataclasses.asdict(self.params)

    def columns_read(self) -> set[str]:
        """Columns this stage needs in its input besides the text (checked against the input's
        columns before any work, e.g. the columns of a ``keep_if`` expression)."""
        return set()

    def columns_added(self) -> set[str] | None:
        """Columns this stage adds to the documents; None when it cannot say (then columns read
        by later stages are not checked)."""
        return None
    def input_paths(self) -> list[str]:
        """Files or folders this stage reads besides the run's input (reference sets): nothing
        the run writes may overlap them either."""
        return []

    def output_paths(self) -> dict[str, str]:
        """Files this stage writes outside the run's folders, by option name
        (``{"--clusters": path}``): the runner refuses them when they overlap an input."""
        return {}

    def fingerprint(self) -> Any:
        """Extra JSON-able state that must invalidate completed work when it changes (e.g. a
        model file's size and mtime). Parameters are always included."""
        return None

    # -- map stages ---------------------------------------------------------------------------
    def process(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int) -> Result:
        raise NotImplementedError(f"stage {self.name} has no process()")

    # -- global stages ------------------------------------------------------------------------
    def scan(self, batches: Iterable[pa.RecordBatch], shard: ShardInfo, round: int, plan: Any) -> Any:
        raise NotImplementedError(f"stage {self.name} has no scan()")

    def reduce(self, partials: list[tuple[ShardInfo, Any]], round: int, plan: Any) -> Any:
        raise NotImplementedError(f"stage {self.name} has no reduce()")

    def apply(self, batch: pa.RecordBatch, shard: ShardInfo, pos: int, plan: Any) -> Result:
        raise NotImplementedError(f"stage {self.name} has no apply()")

    def finish(self, plan: Any) -> dict[str, Any]:
        """Driver, after the stage's last phase: extra statistics for stats.json (may write
        report files such as clusters.parquet)."""
        return {}

    # -- helpers --------------------------------------------------------------------------------
    def texts(self, batch: pa.RecordBatch) -> pa.Array:
        return batch.column(self.ctx.text_field)

    def reason(self, rule: str) -> str:
        return f"{self.name}.{rule}"


# -- registry -------------------------------------------------------------------------------------

STAGE_MODULES: list[str] = list(STAGE_NAMES)  # dcurate.stages.<name>.stage for each name
_REGISTRY: dict[str, type[Stage]] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make a stage available to recipes and the CLI."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def load_stage_modules() -> list[Any]:
    """Import every stage module that exists (each registers its stages); return the modules."""
    mods = []
    for m in STAGE_MODULES:
        name = f"dcurate.stages.{m}.stage"
        if importlib.util.find_spec(name) is None:
            continue
        mods.append(importlib.import_module(name))
    return mods


_LOADED = False


def registry() -> dict[str, type[Stage]]:
    """Every registered stage (all stage modules are imported on first use, even when one was
    imported directly before)."""
    global _LOADED
    if not _LOADED:
        load_stage_modules()
        _LOADED = True
    return _REGISTRY


def get_stage(name: str, where: str = "") -> type[Stage]:
    """The stage class called ``name``; imports only its own module when that is enough (a
    recipe with one filter stage does not import fastText, LightGBM, ...)."""
    if name not in _REGISTRY and name in STAGE_MODULES:
        importlib.import_module(f"dcurate.stages.{name}.stage")
    if name in _REGISTRY:
        return _REGISTRY[name]
    reg = registry()
    if name not in reg:
        from dcurate.core.params import did_you_mean

        raise RecipeError(
            f"{where + ': ' if where else ''}unknown stage '{name}'{did_you_mean(name, set(reg))}; "
            f"available: {', '.join(sorted(reg))}"
        )
    return reg[name]
