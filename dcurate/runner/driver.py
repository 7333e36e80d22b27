"""The runner: turns a list of stages into passes over the shards and executes them with resume.

Plan. Consecutive map stages are fused into one pass per shard piece; a global stage is a
barrier. A pass reads a *source* (the input shards, or the previous pass's intermediate files),
optionally applies the plan of the global stage before it, runs its map stages and writes either
the final output or intermediate files. When a pass feeds a global stage, that stage's first scan
runs inside the same pass on the batches being written (no extra read). A global stage that
directly follows the input (or another global stage) scans its source without materialising it.

Resume. Every task (pass x piece, scan round x piece, reduce, merge) writes a marker after its
output is in place (outputs are written under a temporary name and renamed). Markers live in
folders named by a hash of everything the task depends on (input files' sizes and mtimes, stage
parameters and model fingerprints of this and all earlier stages), so re-running the same command
after a crash skips completed work and yields byte-identical output, and changing a parameter
recomputes exactly what it invalidates. ``force`` starts from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dcurate import __version__
from dcurate.core.errors import DcurateError, InputError, RecipeError
from dcurate.core.options import RunOptions
from dcurate.core.params import digest
from dcurate.core.stage import REASON_COLUMN, Result, ShardInfo, Stage, StageContext, get_stage
from dcurate.io import (
    FORMATS,
    STDIN,
    BatchReader,
    Piece,
    Shard,
    ShardWriter,
    expand_inputs,
    merge_parts,
    output_name,
    plan_pieces,
    spool_stdin,
)
from dcurate.runner.executor import make_executor
from dcurate.runner.executor_api import Executor

log = logging.getLogger("dcurate")

INTERMEDIATE_FMT = "parquet"


# -- plan ----------------------------------------------------------------------------------------


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


@dataclass
class TaskResult:
    stats: dict[int, StageStats] = field(default_factory=dict)
    partial: Any = None
    rows_out: int = 0
    bad_records: int = 0
    rows_read: int = 0
    bytes_read: int = 0
    max_rss: int = 0  # peak resident memory of the process that ran the task (bytes)


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- worker side ---------------------------------------------------------------------------------

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


def _load_plan(path: str | None) -> Any:
    if path is None:
        return None
    if path not in _PLAN_CACHE:
        with open(path, "rb") as f:
            _PLAN_CACHE[path] = pickle.load(f)
    return _PLAN_CACHE[path]


def _atomic_pickle(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _text_bytes(batch: pa.RecordBatch, text_field: str) -> int:
    if batch.num_rows == 0 or text_field not in batch.schema.names:
        return 0
    col = batch.column(text_field)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return 0
    return int(pc.sum(pc.binary_length(col)).as_py() or 0)


def _shard_info(piece: Piece) -> ShardInfo:
    return ShardInfo(piece.shard.stem, piece.shard.index, piece.index, piece.n_pieces, piece.shard.path)


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
    tf = task.source.text_field
    stages = {s.index: s for s in task.stages}
    apply_stage = _stage(stages[spec.apply]) if spec.apply is not None else None
    maps = [_stage(stages[i]) for i in spec.maps]
    plan = _load_plan(task.apply_plan)
    info = _shard_info(task.source.piece)
    result = TaskResult()
    reader = _read(task.source)
    writer = ShardWriter(task.out_path, task.out_fmt, task.level)
    rej_writer = ShardWriter(task.rejected_path, task.out_fmt, task.level) if task.rejected_path else None
    order = ([spec.apply] if spec.apply is not None else []) + list(spec.maps)
    stats = {i: StageStats() for i in order}
    positions = {i: 0 for i in order}
    last_schema: list[pa.Schema] = []

    def produce():
        for batch in reader:
            result.rows_read += batch.num_rows
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
    _atomic_pickle(result, task.marker)
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


def run_scan_task(task: ScanTask) -> TaskResult:
    stage = _stage(task.stage)
    plan = _load_plan(task.plan)
    reader = _read(task.source)
    t0 = time.perf_counter()

    def batches():
        yield from reader

    # The batches are read lazily: a round that needs nothing from the data (its work files
    # already hold what it needs) does not read the shard at all.
    partial = stage.scan(batches(), _shard_info(task.source.piece), task.round, plan)
    res = TaskResult(partial=partial, bad_records=reader.bad_records, rows_read=reader.rows, max_rss=_peak_rss())
    res.stats[task.stage.index] = StageStats(seconds=time.perf_counter() - t0)
    _atomic_pickle(res, task.marker)
    return res


@dataclass
class MergeTask:
    parts: list[str]
    final: str
    fmt: str
    level: int | None
    marker: str


def run_merge_task(task: MergeTask) -> TaskResult:
    merge_parts(task.parts, task.final, task.fmt, task.level)
    res = TaskResult()
    _atomic_pickle(res, task.marker)
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
    res = TaskResult(rows_out=w.rows)
    _atomic_pickle(res, task.marker)
    return res


# -- driver ----------------------------------------------------------------------------------------


def _load_marker(path: str) -> TaskResult | None:
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return None


class Runner:
    def __init__(self, inputs: list[str], output: str, stages: list[tuple[str, Any]], opts: RunOptions):
        self.inputs = [str(x) for x in inputs]
        self.output = str(output)
        self.stage_defs = stages
        self.opts = opts
        self.workers = opts.workers or os.cpu_count() or 1
        self.to_stdout = self.output == STDIN
        self._tmp_root: str | None = None
        if self.to_stdout:
            self._tmp_root = tempfile.mkdtemp(prefix="dcurate-")
            self.out_dir = Path(self._tmp_root) / "out"
        else:
            self.out_dir = Path(self.output)
        self.workdir = Path(opts.workdir) if opts.workdir else self.out_dir / "_dcurate"
        self.executor: Executor | None = None
        self.stats: dict[int, StageStats] = {}
        self.extra: dict[int, dict] = {}
        self.bad_records = 0
        self.peak_rss = 0

    # .. planning ..............................................................................
    def _check_paths(self, shards: list[Shard]) -> None:
        out = self.out_dir.resolve()
        for s in shards:
            if s.path == STDIN:
                continue
            p = Path(s.path).resolve()
            if p == out or out in p.parents:
                raise InputError(f"refusing to write over the input: {s.path} is inside the output {self.output}")
        for item in self.inputs:
            if item != STDIN and os.path.isdir(item):
                d = Path(item).resolve()
                if d == out or d in out.parents:
                    raise InputError(
                        f"refusing to write the output {self.output} inside the input directory {item}"
                    )

    def plan(self) -> RunPlan:
        opts = self.opts
        shards = expand_inputs(self.inputs, opts.input_format)
        self._check_paths(shards)
        if any(s.path == STDIN for s in shards):
            if len(shards) > 1:
                raise InputError("'-' (stdin) cannot be combined with other inputs")
            os.makedirs(self.workdir / "stdin", exist_ok=True)
            path = spool_stdin(str(self.workdir / "stdin" / "stdin.jsonl"))
            st = os.stat(path)
            shards = [Shard(path, opts.input_format or "jsonl", "stdin", 0, st.st_size, st.st_mtime)]
        pieces = [p for s in shards for p in plan_pieces(s, opts.split_size)]
        if opts.limit is not None:
            pieces = self._apply_limit(pieces, opts.limit)
        input_key = digest(
            [s.identity() for s in shards], opts.text_field, opts.id_field, opts.input_format,
            opts.on_bad_record, opts.limit, opts.split_size,
        )
        specs: list[StageSpec] = []
        key = input_key
        for i, (name, params) in enumerate(self.stage_defs):
            cls = name if isinstance(name, type) else get_stage(name, f"stages[{i}]")
            name = cls.name
            ctx = StageContext(
                text_field=opts.text_field, id_field=opts.id_field, seed=opts.seed, index=i,
                workdir=self.workdir, out_dir=None if self.to_stdout else self.out_dir, workers=self.workers,
            )
            probe = cls(params, ctx)
            key = digest(key, name, dataclasses.asdict(params), probe.fingerprint(), opts.seed, __version__)
            ctx.workdir = self.workdir / "stages" / f"{i:02d}-{name}-{key}"
            specs.append(StageSpec(i, name, cls, params, ctx, key))
        kinds = [self._kind(s) for s in specs]

        passes: list[PassSpec] = []
        global_source: dict[int, str] = {}
        fused: dict[int, int] = {}
        source = "input"
        pending_apply: int | None = None
        chain: list[int] = []
        last_key = input_key
        for s, kind in zip(specs, kinds, strict=True):
            if kind == "map":
                chain.append(s.index)
                continue
            if pending_apply is None and not chain:
                global_source[s.index] = source
            else:
                pkey = digest(last_key if not chain else specs[chain[-1]].key, "intermediate", s.key)
                sink_dir = str(self.workdir / "passes" / f"{len(passes):02d}-{pkey}")
                p = PassSpec(len(passes), pkey, self._label(specs, pending_apply, chain), source, pending_apply,
                             chain, "intermediate", sink_dir, fused_scan=s.index)
                passes.append(p)
                fused[s.index] = p.index
                global_source[s.index] = sink_dir
                source = sink_dir
            pending_apply, chain = s.index, []
            last_key = s.key
        sink = "prereshard" if opts.shard_size else "final"
        final_key = digest(specs[-1].key if specs else input_key, sink, opts.output_format,
                           opts.compression_level, self.to_stdout, opts.rejected)
        sink_dir = str(self.workdir / "prereshard" / final_key) if opts.shard_size else str(self.out_dir)
        passes.append(PassSpec(len(passes), final_key, self._label(specs, pending_apply, chain), source,
                               pending_apply, chain, sink, sink_dir))
        return RunPlan(shards, pieces, specs, passes, global_source, fused)

    @staticmethod
    def _kind(spec: StageSpec) -> str:
        kind = spec.build().kind
        if kind not in ("map", "global"):
            raise RecipeError(f"stage {spec.name}: kind must be 'map' or 'global', not {kind!r}")
        return kind

    @staticmethod
    def _label(specs: list[StageSpec], apply: int | None, chain: list[int]) -> str:
        names = ([f"{specs[apply].name}(apply)"] if apply is not None else []) + [specs[i].name for i in chain]
        return "+".join(names) or "copy"

    def _apply_limit(self, pieces: list[Piece], limit: int) -> list[Piece]:
        out, left = [], limit
        for p in pieces:
            if left <= 0:
                out.append(dataclasses.replace(p, limit=0))
                continue
            n = self._count_rows(p, left)
            out.append(dataclasses.replace(p, limit=min(n, left)))
            left -= min(n, left)
        return out

    def _count_rows(self, piece: Piece, cap: int) -> int:
        if piece.shard.fmt == "parquet":
            md = pq.ParquetFile(piece.shard.path).metadata
            groups = piece.row_groups if piece.row_groups is not None else range(md.num_row_groups)
            return sum(md.row_group(g).num_rows for g in groups)
        n = 0
        reader = BatchReader(piece, self.opts.text_field, self.opts.id_field, self.opts.on_bad_record, require_text=False)
        for b in reader:
            n += b.num_rows
            if n >= cap:
                break
        return n

    # .. output naming .........................................................................
    def _out_fmt(self, shard: Shard) -> str:
        if self.to_stdout:
            return "jsonl"
        return self.opts.output_format or shard.fmt

    # .. execution .............................................................................
    def run(self) -> dict[str, Any]:
        try:
            out = self._run()
        except BaseException:
            if self.executor is not None:
                self.executor.terminate()
            raise
        finally:
            if self._tmp_root:
                shutil.rmtree(self._tmp_root, ignore_errors=True)
        if self.executor is not None:
            self.executor.close()
        return out

    def _run(self) -> dict[str, Any]:
        opts = self.opts
        t_start = time.time()
        if opts.force and self.workdir.exists():
            shutil.rmtree(self.workdir)
        plan = self.plan()
        if not opts.dry_run:
            self._remove_stale_temp_files()
        if opts.dry_run:
            self._print_plan(plan)
            return {"dry_run": True, "shards": len(plan.shards), "pieces": len(plan.pieces)}
        os.makedirs(self.workdir, exist_ok=True)
        self._write_manifest(plan)
        stages = {s.index: s.build() for s in plan.stages}
        preload = sorted({m for st in stages.values() for m in st.preload_modules()})
        self.executor = make_executor(opts.executor, self.workers, preload, opts.ray_address, opts.storage_options)
        self.executor.start()  # in the background, while stages prepare
        for s in plan.stages:
            s.ctx.mapper = self.executor.map
            st = stages[s.index]
            st.ctx = s.ctx
            os.makedirs(s.ctx.workdir, exist_ok=True)
            st.prepare()
            s.ctx.mapper = None
        plans: dict[int, str] = {}
        for p in plan.passes:
            # Global stages fed by this pass's source (not fused) scan before the pass runs.
            if p.apply is not None:
                plans[p.apply] = self._run_global(plan, stages, p.apply)
            self._run_pass(plan, p, plans.get(p.apply) if p.apply is not None else None)
        for s in plan.stages:
            if s.index in plans:
                s.ctx.mapper = self.executor.map
                extra = stages[s.index].finish(_load_plan(plans[s.index]))
                s.ctx.mapper = None
                if extra:
                    self.extra[s.index] = extra
        if opts.shard_size:
            self._reshard(plan)
        summary = self._summary(plan, time.time() - t_start)
        if not self.to_stdout:
            self._write_json(self.out_dir / "stats.json", summary)
        self._print_summary(summary)
        if self.to_stdout:
            self._emit_stdout(plan)
        self._cleanup(plan)
        return summary

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of an interrupted run ('.NAME.tmp-PID') are never resumed from."""
        for root in [self.out_dir, Path(self.opts.rejected) if self.opts.rejected else None]:
            if root is None or not root.exists():
                continue
            for p in root.rglob(".*.tmp-*"):
                if p.is_file():
                    p.unlink()

    def _source_specs(self, plan: RunPlan, source: str) -> list[SourceSpec]:
        o = self.opts
        if source == "input":
            return [SourceSpec(p, o.text_field, o.id_field, o.on_bad_record) for p in plan.pieces]
        out = []
        for p in plan.pieces:
            path = os.path.join(source, self._intermediate_name(p))
            sh = Shard(path, INTERMEDIATE_FMT, p.shard.stem, p.shard.index)
            out.append(SourceSpec(Piece(sh, p.index, p.n_pieces), o.text_field, o.id_field, "error"))
        return out

    @staticmethod
    def _intermediate_name(p: Piece) -> str:
        return f"{p.shard.index:06d}-{p.index:04d}.parquet"

    def _execute(self, fn, tasks: list, desc: str, markers: list[str]) -> list[TaskResult]:
        t0 = time.perf_counter()
        results = self._execute_tasks(fn, tasks, desc, markers)
        log.debug("%s: %d tasks in %.2f s", desc, len(tasks), time.perf_counter() - t0)
        self.peak_rss = max([self.peak_rss] + [r.max_rss for r in results if r is not None])
        return results

    def _execute_tasks(self, fn, tasks: list, desc: str, markers: list[str]) -> list[TaskResult]:
        results: list[TaskResult | None] = [None] * len(tasks)
        todo = []
        if not self.opts.force:
            for i, m in enumerate(markers):
                r = _load_marker(m)
                if r is not None:
                    results[i] = r
        todo = [i for i, r in enumerate(results) if r is None]
        skipped = len(tasks) - len(todo)
        bar = self._bar(len(tasks), desc, skipped)
        docs = 0
        try:
            for j, r in self.executor.imap_unordered(fn, [tasks[i] for i in todo]):
                results[todo[j]] = r
                if bar is not None:
                    docs += r.rows_read
                    bar.set_postfix(docs=f"{docs:,}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if skipped:
            log.info("%s: %d of %d tasks already complete (resumed)", desc, skipped, len(tasks))
        return results  # type: ignore[return-value]

    def _bar(self, total: int, desc: str, done: int):
        if not self.opts.progress or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=done, desc=desc, unit="shard", file=sys.stderr, leave=False)

    def _run_global(self, plan: RunPlan, stages: dict[int, Stage], gi: int) -> str:
        spec = plan.stages[gi]
        stage = stages[gi]
        plan_path = None
        prev_plan = None
        for r in range(stage.rounds):
            path = str(spec.ctx.workdir / f"plan-round{r}.pkl")
            if not self.opts.force and os.path.exists(path):
                plan_path, prev_plan = path, _load_plan(path)
                continue
            if r == 0 and gi in plan.fused:
                p = plan.passes[plan.fused[gi]]
                markers = [self._pass_marker(p, pc_) for pc_ in plan.pieces]
                results = [_load_marker(m) for m in markers]
                if any(x is None for x in results):
                    raise DcurateError(f"internal: scan partials of stage {spec.name} missing")
            else:
                sources = self._source_specs(plan, plan.global_source[gi])
                mdir = spec.ctx.workdir / f"scan-round{r}"
                markers = [str(mdir / f"{_shard_info(s.piece).key}.done") for s in sources]
                tasks = [ScanTask(spec, plan.stages, s, r, plan_path, m) for s, m in zip(sources, markers, strict=True)]
                results = self._execute(run_scan_task, tasks, f"{spec.name} scan {r + 1}/{stage.rounds}", markers)
            partials = [(_shard_info(p), res.partial) for p, res in zip(plan.pieces, results, strict=True)]
            if not (r == 0 and gi in plan.fused):  # a fused scan's pass already counted its seconds
                for res in results:
                    for i, st in res.stats.items():
                        self.stats.setdefault(i, StageStats()).seconds += st.seconds
            t0 = time.perf_counter()
            spec.ctx.mapper = self.executor.map
            stage.ctx = spec.ctx
            new_plan = stage.reduce(partials, r, prev_plan)
            spec.ctx.mapper = None
            log.debug("%s reduce %d/%d in %.2f s", spec.name, r + 1, stage.rounds, time.perf_counter() - t0)
            self.stats.setdefault(gi, StageStats()).seconds += time.perf_counter() - t0
            _atomic_pickle(new_plan, path)
            plan_path, prev_plan = path, new_plan
        assert plan_path is not None
        return plan_path

    def _pass_marker(self, p: PassSpec, piece: Piece) -> str:
        return str(self.workdir / "markers" / f"pass{p.index:02d}-{p.key}" / f"{piece.shard.index:06d}-{piece.index:04d}.done")

    def _run_pass(self, plan: RunPlan, p: PassSpec, apply_plan: str | None) -> None:
        o = self.opts
        sources = self._source_specs(plan, p.source)
        tasks, markers = [], []
        parts: dict[int, list[str]] = {}
        for piece, src in zip(plan.pieces, sources, strict=True):
            fmt = INTERMEDIATE_FMT if p.sink == "intermediate" else self._out_fmt(piece.shard)
            if p.sink == "intermediate":
                out_path = os.path.join(p.sink_dir, self._intermediate_name(piece))
            elif piece.n_pieces > 1:
                out_path = str(self.workdir / "parts" / p.key / f"{piece.shard.index:06d}-{piece.index:04d}{FORMATS[fmt]}")
                parts.setdefault(piece.shard.index, []).append(out_path)
            else:
                out_path = os.path.join(p.sink_dir, output_name(piece.shard.stem, fmt))
            rej = None
            if o.rejected and (p.maps or p.apply is not None):
                rej_fmt = fmt if p.sink != "intermediate" else self._out_fmt(piece.shard)
                suffix = f".{piece.index:04d}" if piece.n_pieces > 1 else ""
                rej = os.path.join(o.rejected, f"{p.index:02d}-{p.label.replace('(apply)', '')}",
                                   output_name(piece.shard.stem + suffix, rej_fmt))
            marker = self._pass_marker(p, piece)
            markers.append(marker)
            tasks.append(PassTask(p, plan.stages, src, apply_plan, out_path, fmt,
                                  o.compression_level if p.sink != "intermediate" else 1, rej, marker))
        results = self._execute(run_pass_task, tasks, f"pass {p.index + 1}/{len(plan.passes)}: {p.label}", markers)
        for res in results:
            for i, st in res.stats.items():
                self.stats.setdefault(i, StageStats()).add(st)
        if p.source == "input":
            self.bad_records += sum(r.bad_records for r in results)
        self._rows_out = {}
        for piece, res in zip(plan.pieces, results, strict=True):
            self._rows_out[(piece.shard.index, piece.index)] = res.rows_out
        if parts:
            mtasks, mmarkers = [], []
            for sh in plan.shards:
                if sh.index not in parts:
                    continue
                fmt = self._out_fmt(sh)
                final = os.path.join(p.sink_dir, output_name(sh.stem, fmt))
                m = str(self.workdir / "markers" / f"merge-{p.key}" / f"{sh.index:06d}.done")
                mmarkers.append(m)
                mtasks.append(MergeTask(parts[sh.index], final, fmt, o.compression_level, m))
            self._execute(run_merge_task, mtasks, "merge pieces", mmarkers)

    def _reshard(self, plan: RunPlan) -> None:
        o = self.opts
        p = plan.passes[-1]
        files = []
        for sh in plan.shards:
            fmt = self._out_fmt(sh)
            rows = sum(v for (si, _), v in self._rows_out.items() if si == sh.index)
            files.append((os.path.join(p.sink_dir, output_name(sh.stem, fmt)), fmt, rows))
        total = sum(f[2] for f in files)
        size = o.shard_size
        n_out = max(1, -(-total // size))
        out_fmt = self._out_fmt(plan.shards[0])
        tasks, markers = [], []
        starts, acc = [], 0
        for f in files:
            starts.append(acc)
            acc += f[2]
        key = digest(p.key, size, out_fmt)
        for j in range(n_out):
            lo, hi = j * size, min((j + 1) * size, total)
            slices, fmts = [], []
            for (path, fmt, rows), s0 in zip(files, starts, strict=True):
                a, b = max(lo, s0), min(hi, s0 + rows)
                if a < b:
                    slices.append((path, a - s0, b - a))
                    fmts.append(fmt)
            m = str(self.workdir / "markers" / f"reshard-{key}" / f"{j:05d}.done")
            markers.append(m)
            final = os.path.join(str(self.out_dir), output_name(f"part-{j:05d}", out_fmt))
            if not slices:  # an empty output still gets one (empty) shard with the schema
                slices, fmts = [(files[0][0], 0, 0)], [files[0][1]]
            tasks.append(ReshardTask(slices, fmts, final, out_fmt, o.compression_level, m))
        self._execute(run_reshard_task, tasks, "reshard", markers)

    # .. reporting ..............................................................................
    def _summary(self, plan: RunPlan, seconds: float) -> dict[str, Any]:
        stages = []
        for s in plan.stages:
            st = self.stats.get(s.index, StageStats())
            entry = {
                "stage": s.name,
                "index": s.index,
                "docs_in": st.docs_in,
                "docs_out": st.docs_out,
                "bytes_in": st.bytes_in,
                "bytes_out": st.bytes_out,
                "removed": dict(sorted(st.removed.items())),
                "seconds": round(st.seconds, 3),
            }
            if st.counters:
                entry["counters"] = dict(sorted(st.counters.items()))
            if s.index in self.extra:
                entry.update(self.extra[s.index])
            stages.append(entry)
        docs_out = sum(self._rows_out.values()) if hasattr(self, "_rows_out") else 0
        return {
            "dcurate_version": __version__,
            "shards": len(plan.shards),
            "pieces": len(plan.pieces),
            "shards_out": -(-docs_out // self.opts.shard_size) or 1 if self.opts.shard_size else len(plan.shards),
            "docs_out": docs_out,
            "bad_records_skipped": self.bad_records,
            "stages": stages,
            "seconds": round(seconds, 3),
            "workers": self.workers,
            "peak_rss_mb": {"worker": round(self.peak_rss / 1e6, 1), "driver": round(_peak_rss() / 1e6, 1)},
        }

    def _print_summary(self, summary: dict[str, Any]) -> None:
        lines = [f"{'stage':<22}{'docs in':>12}{'docs out':>12}{'removed':>10}{'MB in':>10}{'MB out':>10}{'s':>9}"]
        for s in summary["stages"]:
            removed = s["docs_in"] - s["docs_out"]
            lines.append(
                f"{str(s['index']) + ' ' + s['stage']:<22}{s['docs_in']:>12,}{s['docs_out']:>12,}{removed:>10,}"
                f"{s['bytes_in'] / 1e6:>10.2f}{s['bytes_out'] / 1e6:>10.2f}{s['seconds']:>9.2f}"
            )
            for reason, n in s["removed"].items():
                lines.append(f"    {reason:<40}{n:>12,}")
        lines.append(
            f"{summary['docs_out']:,} documents written to {self.output} ({summary['shards_out']} shards) "
            f"in {summary['seconds']:.1f} s with {summary['workers']} worker(s)"
        )
        if summary["bad_records_skipped"]:
            lines.append(f"{summary['bad_records_skipped']:,} malformed records skipped")
        print("\n".join(lines), file=sys.stderr)

    def _print_plan(self, plan: RunPlan) -> None:
        out = {
            "inputs": [{"path": s.path, "format": s.fmt, "stem": s.stem, "bytes": s.size} for s in plan.shards],
            "pieces": len(plan.pieces),
            "output": self.output,
            "workdir": str(self.workdir),
            "options": dataclasses.asdict(self.opts),
            "stages": [
                {"index": s.index, "stage": s.name, "kind": self._kind(s), "params": s.build().describe()}
                for s in plan.stages
            ],
            "passes": [
                {"pass": p.index, "stages": p.label, "reads": p.source if p.source == "input" else "intermediate",
                 "writes": p.sink}
                for p in plan.passes
            ],
        }
        print(json.dumps(out, indent=2, default=str))

    def _write_manifest(self, plan: RunPlan) -> None:
        if self.to_stdout:
            return
        manifest = {
            "dcurate_version": __version__,
            "inputs": [{"path": s.path, "format": s.fmt, "bytes": s.size, "mtime": s.mtime} for s in plan.shards],
            "output": self.output,
            "options": dataclasses.asdict(self.opts),
            "stages": [
                {"stage": s.name, "params": dataclasses.asdict(s.params), "hash": s.key} for s in plan.stages
            ],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self._write_json(self.out_dir / "_dcurate" / "manifest.json", manifest)

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        os.makedirs(path.parent, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
        os.replace(tmp, path)

    def _emit_stdout(self, plan: RunPlan) -> None:
        out = sys.stdout.buffer
        if self.opts.shard_size:
            files = sorted(p for p in os.listdir(self.out_dir) if p.startswith("part-"))
            paths = [os.path.join(self.out_dir, f) for f in files]
        else:
            paths = [os.path.join(self.out_dir, output_name(s.stem, "jsonl")) for s in plan.shards]
        for p in paths:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
        out.flush()

    def _cleanup(self, plan: RunPlan) -> None:
        """Remove intermediate files (with their markers, so a later run that needs them again
        recomputes them) and the pre-reshard copy of the output."""
        for p in plan.passes:
            if p.sink in ("intermediate", "prereshard"):
                shutil.rmtree(p.sink_dir, ignore_errors=True)
                shutil.rmtree(self.workdir / "markers" / f"pass{p.index:02d}-{p.key}", ignore_errors=True)


def run(
    inputs: list[str] | str,
    output: str,
    stages: list[tuple[str, Any]],
    opts: RunOptions | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (list of (name, params dataclass)) over ``inputs`` into ``output``."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    return Runner(list(inputs), output, stages, opts or RunOptions()).run()
