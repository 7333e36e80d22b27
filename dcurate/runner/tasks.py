"""Worker side of the runner: one task per (pass x piece), (scan round x piece), merge or reshard
slice. Each writes its outputs atomically, then a marker (dcurate.runner.markers) naming them."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dcurate.core import faults
from dcurate.core.stage import REASON_COLUMN, Result, Stage
from dcurate.io import BatchReader, Piece, ShardWriter, merge_parts
from dcurate.io.atomic import is_temp_name
from dcurate.runner import progress
from dcurate.runner.markers import output_record, read_plan, write_marker
from dcurate.runner.plan import PassSpec, StageSpec, StageStats, TaskResult, _peak_rss, shard_info

_STAGE_CACHE: dict[str, Stage] = {}
_PLAN_CACHE: dict[str, Any] = {}


def _stage(spec: StageSpec) -> Stage:
    # Two runs in one process may share parameters and inputs but not work folders.
    key = f"{spec.key}|{spec.ctx.workdir}|{spec.ctx.out_dir}"
    st = _STAGE_CACHE.get(key)
    if st is None:
        st = spec.build()
        st.setup()
        _STAGE_CACHE[key] = st
    return st


def load_plan(path: str | None) -> Any:
    if path is None:
        return None
    if path not in _PLAN_CACHE:
        _PLAN_CACHE[path] = read_plan(path)
    return _PLAN_CACHE[path]


def forget_plan(path: str) -> None:
    _PLAN_CACHE.pop(path, None)


def phase_of(task: Any) -> str:
    """The task's phase as dcurate.core.faults names it (pass1, scan0, merge, reshard)."""
    if isinstance(task, PassTask):
        return f"pass{task.pass_.index}"
    if isinstance(task, ScanTask):
        return f"scan{task.round}"
    return "merge" if isinstance(task, MergeTask) else "reshard"


def _text_bytes(batch: pa.RecordBatch, text_field: str) -> int:
    if batch.num_rows == 0 or text_field not in batch.schema.names:
        return 0
    col = batch.column(text_field)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return 0
    return int(pc.sum(pc.binary_length(col)).as_py() or 0)


@dataclass
class SourceSpec:
    piece: Piece
    text_field: str
    id_field: str
    on_bad_record: str


def _read(src: SourceSpec) -> BatchReader:
    return BatchReader(src.piece, src.text_field, src.id_field, src.on_bad_record)


@dataclass
class PassTask:
    pass_: PassSpec
    stages: list[StageSpec]
    source: SourceSpec
    apply_plan: str | None
    out_path: str
    out_fmt: str
    level: int | None
    rejected_path: str | None
    marker: str
    final: bool = False  # the output is a final shard (its checksum goes to the manifest)
    rejected_fmt: str | None = None  # format of the rejected file (its name's); default out_fmt


def _run_result(res: Result, st: StageStats, text_field: str, dropped_out: list) -> pa.RecordBatch:
    if res.dropped is not None and res.dropped.num_rows:
        reasons = res.dropped.column(REASON_COLUMN).to_pylist()
        st.removed.update(reasons)
        dropped_out.append(res.dropped)
    if res.counters:
        st.counters.update(res.counters)
    return res.batch


def run_pass_task(task: PassTask) -> TaskResult:
    """One pass over one piece: read, apply a plan, run map stages, write (and scan)."""
    spec = task.pass_
    faults.task_start(phase_of(task))
    tf = task.source.text_field
    stages = {s.index: s for s in task.stages}
    apply_stage = _stage(stages[spec.apply]) if spec.apply is not None else None
    maps = [_stage(stages[i]) for i in spec.maps]
    plan = load_plan(task.apply_plan)
    info = shard_info(task.source.piece)
    result = TaskResult()
    reader = _read(task.source)
    writer = ShardWriter(task.out_path, task.out_fmt, task.level)
    rej_fmt = task.rejected_fmt or task.out_fmt  # an intermediate pass writes Parquet, its rejects keep the input's format
    rej_writer = ShardWriter(task.rejected_path, rej_fmt, task.level) if task.rejected_path else None
    order = ([spec.apply] if spec.apply is not None else []) + list(spec.maps)
    stats = {i: StageStats() for i in order}
    positions = {i: 0 for i in order}
    last_schema: list[pa.Schema] = []

    def produce():
        for batch in reader:
            result.rows_read += batch.num_rows
            progress.tick(batch.num_rows)
            dropped: list[pa.RecordBatch] = []
            for i, stage in zip(order, ([apply_stage] if apply_stage else []) + maps, strict=True):
                st = stats[i]
                t0 = time.perf_counter()
                st.docs_in += batch.num_rows
                st.bytes_in += _text_bytes(batch, tf)
                if i == spec.apply:
                    res = stage.apply(batch, info, positions[i], plan)
                else:
                    res = stage.process(batch, info, positions[i])
                positions[i] += batch.num_rows
                batch = _run_result(res, st, tf, dropped)
                st.docs_out += batch.num_rows
                st.bytes_out += _text_bytes(batch, tf)
                st.seconds += time.perf_counter() - t0
                if batch.num_rows == 0:
                    last_schema[:] = [batch.schema]
                    break
            if rej_writer is not None:
                for d in dropped:
                    rej_writer.write(d)
            if batch.num_rows:
                writer.write(batch)
                yield batch
        result.bad_records = reader.bad_records

    try:
        if spec.fused_scan is not None:
            scanner = _stage(stages[spec.fused_scan])
            gen = produce()
            t0 = time.perf_counter()
            result.partial = scanner.scan(gen, info, 0, None)
            result.partial_key = stages[spec.fused_scan].key
            for _ in gen:  # a scan that stopped early must not truncate the output
                pass
            scan_st = result.stats.setdefault(spec.fused_scan, StageStats())
            scan_st.seconds += time.perf_counter() - t0 - sum(s.seconds for s in stats.values())
        else:
            for _ in produce():
                pass
        if writer.rows == 0 and writer.schema is None:
            writer.schema = last_schema[0] if last_schema else _empty_schema(reader, tf, task.source.id_field)
        writer.close()
        if rej_writer is not None:
            if rej_writer.schema is None:
                rej_writer.schema = _empty_schema(reader, tf, task.source.id_field).append(
                    pa.field(REASON_COLUMN, pa.string())
                )
            rej_writer.close()
    except BaseException:
        writer.abort()
        if rej_writer is not None:
            rej_writer.abort()
        raise
    result.rows_out = writer.rows
    for i, st in stats.items():
        result.stats.setdefault(i, StageStats()).add(st)
    result.max_rss = _peak_rss()
    result.outputs = [output_record(task.out_path, task.final)]
    if spec.fused_scan is not None:
        result.scan_outputs = stage_files(_stage(stages[spec.fused_scan]), info.key)
    if task.rejected_path:
        result.outputs.append(output_record(task.rejected_path))
    faults.task_written(phase_of(task))
    write_marker(task.marker, result, result.outputs)
    return result


def _empty_schema(reader: BatchReader, text_field: str, id_field: str) -> pa.Schema:
    schema = reader.schema or pa.schema([pa.field(text_field, pa.string())])
    if id_field not in schema.names:
        schema = schema.append(pa.field(id_field, pa.string()))
    return schema


@dataclass
class ScanTask:
    stage: StageSpec
    all_stages: list[StageSpec]
    source: SourceSpec
    round: int
    plan: str | None
    marker: str


def stage_files(stage: Stage, key: str) -> list[list[Any]]:
    """[path, size, None] of the work files a stage wrote for one piece: entries of its work folder
    named with the piece's key (files, or every file of such a folder). The task's marker names
    them, so that it stops counting when one is gone."""
    out: list[list[Any]] = []
    folder = str(stage.ctx.workdir)
    try:
        entries = [e for e in os.scandir(folder) if key in e.name and not is_temp_name(e.name)]
    except FileNotFoundError:
        return out
    for e in sorted(entries, key=lambda e: e.name):
        if e.is_file(follow_symlinks=False):
            out.append(output_record(e.path))
        elif e.is_dir(follow_symlinks=False):
            for root, _dirs, names in os.walk(e.path):
                out.extend(output_record(os.path.join(root, n)) for n in sorted(names) if not is_temp_name(n))
    return out


def run_scan_task(task: ScanTask) -> TaskResult:
    faults.task_start(phase_of(task))
    stage = _stage(task.stage)
    plan = load_plan(task.plan)
    reader = _read(task.source)
    t0 = time.perf_counter()

    def batches():
        for b in reader:
            progress.tick(b.num_rows)
            yield b

    # The batches are read lazily: a round that needs nothing from the data (its work files
    # already hold what it needs) does not read the shard at all.
    partial = stage.scan(batches(), shard_info(task.source.piece), task.round, plan)
    res = TaskResult(partial=partial, bad_records=reader.bad_records, rows_read=reader.rows, max_rss=_peak_rss())
    res.stats[task.stage.index] = StageStats(seconds=time.perf_counter() - t0)
    res.outputs = stage_files(stage, shard_info(task.source.piece).key)
    faults.task_written(phase_of(task))
    write_marker(task.marker, res, res.outputs)
    return res


@dataclass
class MergeTask:
    parts: list[str]
    final: str
    fmt: str
    level: int | None
    marker: str


def run_merge_task(task: MergeTask) -> TaskResult:
    faults.task_start("merge")
    merge_parts(task.parts, task.final, task.fmt, task.level)
    res = TaskResult(outputs=[output_record(task.final, True)])
    faults.task_written("merge")
    write_marker(task.marker, res, res.outputs)
    return res


@dataclass
class ReshardTask:
    slices: list[tuple[str, int, int]]  # (file, first row, rows)
    fmt_in: list[str]
    final: str
    fmt: str
    level: int | None
    marker: str


def run_reshard_task(task: ReshardTask) -> TaskResult:
    from dcurate.io.formats import Shard as _Shard

    faults.task_start("reshard")
    w = ShardWriter(task.final, task.fmt, task.level)
    try:
        for (path, start, n), fmt in zip(task.slices, task.fmt_in, strict=True):
            piece = Piece(_Shard(path, fmt, "x", 0))
            seen = 0
            for b in BatchReader(piece, require_text=False, id_field="\x00none"):
                b = b.drop_columns(["\x00none"]) if "\x00none" in b.schema.names else b
                lo, hi = max(start - seen, 0), min(start + n - seen, b.num_rows)
                if lo < hi:
                    w.write(b.slice(lo, hi - lo))
                seen += b.num_rows
                if seen >= start + n:
                    break
            if w.schema is None:  # keep the schema even for an empty slice
                w.schema = pq.read_schema(path) if fmt == "parquet" else None
        w.close()
    except BaseException:
        w.abort()
        raise
    res = TaskResult(rows_out=w.rows, outputs=[output_record(task.final, True)])
    faults.task_written("reshard")
    write_marker(task.marker, res, res.outputs)
    return res
