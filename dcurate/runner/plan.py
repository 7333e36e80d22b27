"""The run plan: stages as the workers rebuild them, passes over the shards, and what tasks
return (statistics, a global stage's partial, rows written). Task results are stored in markers
as safe work files, so every type here is registered with :func:`dcurate.core.workfile.work_type`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dcurate.core.stage import ShardInfo, Stage, StageContext
from dcurate.core.workfile import work_type
from dcurate.io import Piece, Shard

INTERMEDIATE_FMT = "parquet"
INTERMEDIATE_EXT = ".pqw"  # Parquet, named so that no reader of OUT takes it for data


@dataclass
class StageSpec:
    """A stage as the workers rebuild it."""

    index: int
    name: str
    cls: type  # the Stage subclass (pickled by reference)
    params: Any
    ctx: StageContext
    key: str  # hash of this stage and everything before it

    def build(self) -> Stage:
        return self.cls(self.params, self.ctx)


@dataclass
class PassSpec:
    index: int
    key: str
    label: str
    source: str  # "input" or a directory of intermediate files
    apply: int | None  # index of the global stage whose plan is applied first
    maps: list[int]
    sink: str  # "final", "prereshard" or "intermediate"
    sink_dir: str
    fused_scan: int | None = None  # global stage whose round-0 scan runs on this pass's output


@dataclass
class RunPlan:
    shards: list[Shard]
    pieces: list[Piece]
    stages: list[StageSpec]
    passes: list[PassSpec]
    # for each global stage: where it scans from ("input" or pass index feeding it)
    global_source: dict[int, str]
    fused: dict[int, int]  # global stage index -> pass index whose output it scans in round 0


@work_type
@dataclass
class StageStats:
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    removed: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.removed.update(other.removed)
        self.counters.update(other.counters)
        self.seconds += other.seconds


@work_type
@dataclass
class TaskResult:
    stats: dict[int, StageStats] = field(default_factory=dict)
    partial: Any = None
    partial_key: str = ""  # key of the global stage whose fused scan produced ``partial``
    scan_outputs: list = field(default_factory=list)  # [path, size, None] of that scan's work files
    rows_out: int = 0
    bad_records: int = 0
    rows_read: int = 0
    bytes_read: int = 0
    max_rss: int = 0  # peak resident memory of the process that ran the task (bytes)
    outputs: list = field(default_factory=list)  # [path, size, checksum] of the files written


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def shard_info(piece: Piece) -> ShardInfo:
    return ShardInfo(piece.shard.stem, piece.shard.index, piece.index, piece.n_pieces, piece.shard.path)


def load_result(path: str, size_of: Callable[[str], int | None] | None = None) -> TaskResult | None:
    """The TaskResult of a marker that still holds (see runner/markers.py), None otherwise."""
    from dcurate.runner.markers import load_marker

    got = load_marker(path, size_of)
    if got is None or not isinstance(got[0], TaskResult):
        return None
    return got[0]
