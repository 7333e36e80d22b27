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
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dcurate.core import faults
from dcurate.core import paths as safe_paths
from dcurate.core.errors import DcurateError, RecipeError
from dcurate.core.options import RunOptions
from dcurate.core.params import digest
from dcurate.core.stage import Stage, StageContext, get_stage
from dcurate.core.version import __version__
from dcurate.core.workfile import BadWorkFile
from dcurate.io import (
    FORMATS,
    STDIN,
    BatchReader,
    Piece,
    Shard,
    expand_inputs,
    output_name,
    plan_pieces,
    spool_stdin,
    storage,
)
from dcurate.io.atomic import write_json
from dcurate.report import summary as summary_table
from dcurate.runner import planview, progress, validate
from dcurate.runner.executor import make_executor
from dcurate.runner.executor_api import Executor
from dcurate.runner.markers import outputs_hold, write_plan
from dcurate.runner.nodesync import driver_call
from dcurate.runner.outdir import WORK_ENTRIES, WORK_TAG, Lock, OutDir, own_dir, sweep_temp_files
from dcurate.runner.plan import (
    INTERMEDIATE_EXT,
    INTERMEDIATE_FMT,
    PassSpec,
    RunPlan,
    StageSpec,
    StageStats,
    TaskResult,
    _peak_rss,
    load_result,
    shard_info,
)
from dcurate.runner.remote import Mirror, RemoteLock, fetch_outputs, mirrored_size
from dcurate.runner.tasks import (
    MergeTask,
    PassTask,
    ReshardTask,
    ScanTask,
    SourceSpec,
    forget_plan,
    load_plan,
    phase_of,
    run_merge_task,
    run_pass_task,
    run_reshard_task,
    run_scan_task,
)

log = logging.getLogger("dcurate")

WORK_SUFFIX = ".work"  # final-format files kept in the work folder (pieces, pre-reshard copies)


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
        # OUT / --workdir on object storage: local staging folders mirrored to the store (runner/remote.py)
        self.mirrors: list[Mirror] = []
        if not self.to_stdout and storage.is_uri(self.output):
            self.mirrors.append(Mirror(self.output))
            self.out_dir = self.mirrors[-1].local
        self.workdir = Path(opts.workdir) if opts.workdir else own_dir(self.out_dir) / "work"
        if opts.workdir and storage.is_uri(opts.workdir):
            self.mirrors.append(Mirror(opts.workdir))
            self.workdir = self.mirrors[-1].local
        self.rejected = opts.rejected
        if opts.rejected and storage.is_uri(opts.rejected):
            self.mirrors.append(Mirror(opts.rejected))
            self.rejected = str(self.mirrors[-1].local)
        self.locks: list[Lock | RemoteLock] = []
        self.outdir: OutDir | None = None
        self._final: dict[str, tuple[int, str | None, int]] = {}  # final shard -> (bytes, checksum, rows)
        self.executor: Executor | None = None
        self.stats: dict[int, StageStats] = {}
        self.extra: dict[int, dict] = {}
        self.bad_records = 0
        self.peak_rss = 0
        self.tasks_run = 0  # tasks executed / skipped because complete (a fully resumed run runs none)
        self.tasks_resumed = 0
        self._size_of = functools.partial(mirrored_size, self.mirrors)  # also of files on the store only

    # .. planning ..............................................................................
    def _check_paths(self) -> None:
        """Nothing written may equal, contain or lie inside an input (symlinks followed, globs
        expanded); --rejected and --workdir stay out of the data files of OUT."""
        o = self.opts
        out = None if self.to_stdout else self.output
        safe_paths.check_writes(self.inputs, {"the output": out, "--workdir": o.workdir, "--rejected": o.rejected})
        safe_paths.check_not_inside("--rejected", o.rejected, "the output", out)
        if o.workdir and out is not None:
            w, r = safe_paths.resolve(o.workdir), safe_paths.resolve(out)
            inside = r in w.parents and not any(x.startswith((".", "_")) for x in w.relative_to(r).parts)
            if w == r or w in r.parents or inside:
                raise RecipeError(f"refusing --workdir {o.workdir}: work files would mix with the data in {out}")
        if o.workdir and not storage.is_uri(o.workdir) and os.path.isdir(o.workdir) and not (self.workdir / WORK_TAG).is_file():
            if any(n not in (".dcurate-lock",) for n in os.listdir(o.workdir)):
                raise RecipeError(f"refusing --workdir {o.workdir}: it is not empty and not a dcurate work folder; "
                                 "give a new or empty folder")

    def _check_stage_paths(self, plan: RunPlan) -> None:
        writes: dict[str, Any] = {}
        reads = list(self.inputs)
        for s in plan.stages:
            built = s.build()
            reads += built.input_paths()
            for label, path in built.output_paths().items():
                writes[f"{label} of stage {s.index} ({s.name})"] = path
                if not self.to_stdout:
                    safe_paths.check_not_inside(label, path, "the output", self.output)
        if len(reads) > len(self.inputs):
            o = self.opts
            writes.update({"the output": None if self.to_stdout else self.output, "--workdir": o.workdir,
                           "--rejected": o.rejected})
        safe_paths.check_writes(reads, writes)

    def plan(self) -> RunPlan:
        opts = self.opts
        shards = expand_inputs(self.inputs, opts.input_format)
        if any(s.path == STDIN for s in shards):
            if len(shards) > 1:
                raise RecipeError("'-' (stdin) cannot be combined with other inputs")
            os.makedirs(self.workdir / "stdin", exist_ok=True)
            path = spool_stdin(str(self.workdir / "stdin" / "stdin.spool"))
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
                # The intermediate does not depend on the stage it feeds: changing that stage
                # reuses it (the stage then scans it on its own instead of inside the pass).
                pkey = digest(last_key if not chain else specs[chain[-1]].key, "intermediate")
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
            md = pq.ParquetFile(storage.parquet_source(piece.shard.path)).metadata
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
        env_before = os.environ.get("DCURATE_STORAGE_OPTIONS")
        if self.opts.storage_options:  # storage reads in the driver and in forked workers use them
            os.environ["DCURATE_STORAGE_OPTIONS"] = json.dumps(storage.resolve_options(self.opts.storage_options))
        try:
            out = self._run()
        except BaseException as e:
            if self.executor is not None:
                self.executor.terminate()
            if isinstance(e, DcurateError) and self.mirrors and e.args:
                msg = str(e.args[0])  # name the store's folders, not their staging folders
                for m in self.mirrors:
                    msg = msg.replace(str(m.local), m.uri)
                e.args = (msg, *e.args[1:])
            raise
        finally:
            for lock in reversed(self.locks):
                lock.release()
            for m in self.mirrors:
                m.close()
            if self._tmp_root:
                shutil.rmtree(self._tmp_root, ignore_errors=True)
            if self.opts.storage_options:
                if env_before is None:
                    os.environ.pop("DCURATE_STORAGE_OPTIONS", None)
                else:
                    os.environ["DCURATE_STORAGE_OPTIONS"] = env_before
        if self.executor is not None:
            self.executor.close()
        return out

    def _take_locks(self) -> None:
        """One run per OUT and per work folder: exclusive lock files, taken before planning."""
        lock: Lock | RemoteLock
        if not self.to_stdout:
            what = f"the output folder {self.output}"
            if storage.is_uri(self.output):
                lock = RemoteLock(self.output.rstrip("/") + "/.dcurate/lock", what)
            else:
                lock = Lock(own_dir(self.out_dir) / "lock", what)
            lock.acquire()
            self.locks.append(lock)
        if self.opts.workdir:
            what = f"the work folder {self.opts.workdir}"
            if storage.is_uri(self.opts.workdir):
                lock = RemoteLock(self.opts.workdir.rstrip("/") + "/.dcurate-lock", what)
            else:
                lock = Lock(self.workdir / ".dcurate-lock", what)
            lock.acquire()
            self.locks.append(lock)
        for m in self.mirrors:  # the store is the state a run resumes from (big files stay there)
            m.pull(lazy=True)
        wd = self.opts.workdir
        if wd and storage.is_uri(wd) and not (self.workdir / WORK_TAG).is_file() and any(self.workdir.iterdir()):
            raise RecipeError(f"refusing --workdir {wd}: it is not empty and not a dcurate work folder; "
                             "give a new or empty folder")

    def _publish(self, paths: list[str]) -> None:
        """Publish a finished task's files to the store: the stages' work files (a task may write
        more than its marker lists), its outputs, then its marker."""
        for m in self.mirrors:
            m.sync(under=self.workdir / "stages")
            m.push(paths)

    def _sync(self) -> None:
        """Mirror the staging folders to the store after a phase (see runner/remote.py)."""
        for m in self.mirrors:
            m.sync()

    def _run(self) -> dict[str, Any]:
        opts = self.opts
        t_start = time.time()
        self._check_paths()
        if opts.dry_run:
            plan = self.plan()
            self._check_stage_paths(plan)
            validate.check_run(self, plan)  # the recipe against the input's columns
            self._print_plan(plan)
            return {"dry_run": True, "shards": len(plan.shards), "pieces": len(plan.pieces)}
        self._take_locks()
        if not self.to_stdout:
            wd_name: Path | str = self.workdir  # the manifest names the work folder as the user sees it
            if opts.workdir and storage.is_uri(opts.workdir):
                wd_name = opts.workdir
            elif not opts.workdir and storage.is_uri(self.output):
                wd_name = self.output.rstrip("/") + "/.dcurate/work"
            store = self.mirrors[0] if self.mirrors and self.mirrors[0].local == self.out_dir else None
            self.outdir = OutDir(self.out_dir, wd_name, opts.allow_foreign, store)
            self.outdir.check_foreign()
        if opts.force and (self.workdir / WORK_TAG).is_file():
            for name in WORK_ENTRIES:  # only the folders dcurate creates in its own work folder
                shutil.rmtree(self.workdir / name, ignore_errors=True)
        os.makedirs(self.workdir, exist_ok=True)
        (self.workdir / WORK_TAG).touch()
        self._remove_stale_temp_files()
        plan = self.plan()
        self._check_stage_paths(plan)
        validate.check_run(self, plan)  # the recipe against the input's columns, before any work
        self._manifest = self._manifest_base(plan)
        if self.outdir is not None:
            self.outdir.claim([], self._manifest)
        stages = {s.index: s.build() for s in plan.stages}
        preload = sorted({m for st in stages.values() for m in st.preload_modules()})
        self.executor = make_executor(opts.executor, self.workers, preload, opts.ray_address, opts.storage_options)
        self.executor.start()  # in the background, while stages prepare
        if self.executor.workers != self.workers:  # a Ray cluster: its CPUs, not this machine's
            self.workers = self.executor.workers
            for s in plan.stages:
                s.ctx.workers = self.workers
        if self.mirrors:
            self.executor.attach_staging(self.mirrors, [str(self.out_dir), str(self.workdir)])
        for s in plan.stages:
            st = stages[s.index]
            st.ctx = s.ctx
            os.makedirs(s.ctx.workdir, exist_ok=True)
            with s.ctx.mapping(self.executor.map):
                driver_call(self.mirrors, st.prepare)
        self._sync()
        plans: dict[int, str] = {}
        for p in plan.passes:
            # Global stages fed by this pass's source (not fused) scan before the pass runs.
            if p.apply is not None:
                plans[p.apply] = self._run_global(plan, stages, p.apply)
            self._run_pass(plan, p, plans.get(p.apply) if p.apply is not None else None)
        for s in plan.stages:
            if s.index in plans:
                with s.ctx.mapping(self.executor.map):
                    done_plan = load_plan(plans[s.index])
                    extra = driver_call(self.mirrors, functools.partial(stages[s.index].finish, done_plan), done_plan)
                if extra:
                    self.extra[s.index] = extra
        self._sync()
        if opts.shard_size:
            self._reshard(plan)
            self._sync()
        summary = self._summary(plan, time.time() - t_start)
        if self.outdir is not None:
            write_json(str(own_dir(self.out_dir) / "stats.json"), summary)
            self.outdir.finish(self._shard_records(), dict(self._manifest, docs_out=summary["docs_out"]))
        if self.to_stdout:
            self._emit_stdout(plan)
        self._cleanup(plan)
        if opts.report and not self.to_stdout:
            from dcurate.report.html import report_after_run

            shown = f"{self.output.rstrip('/')}/.dcurate/report.html" if storage.is_uri(self.output) else None
            fetch_outputs(self.mirrors, self.out_dir, self.workdir)  # the report reads them
            report_after_run(self.out_dir, shown)
        self._sync()
        self._print_summary(summary)  # last, so the run's final line is its summary
        return summary

    def _shard_records(self) -> list[dict[str, Any]]:
        assert self.outdir is not None
        return [
            {"path": self.outdir.rel(p), "bytes": size, "checksum": checksum, "rows": rows}
            for p, (size, checksum, rows) in sorted(self._final.items())
        ]

    def _claim(self, paths: list[str]) -> None:
        if self.outdir is not None:
            self.outdir.claim(paths, self._manifest)

    def _remove_stale_temp_files(self) -> None:
        """Temporary files of an interrupted run ('.NAME.dctmp-PID') are never resumed from; only
        dcurate's own temp names are removed, only in folders this run owns (it holds their lock)."""
        roots = [self.workdir]
        if not self.to_stdout:
            roots.append(self.out_dir)
        if self.rejected:
            roots.append(Path(self.rejected))
        sweep_temp_files(roots)

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
        return f"{p.shard.index:06d}-{p.index:04d}{INTERMEDIATE_EXT}"

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
                r = load_result(m, self._size_of)
                if r is not None:
                    results[i] = r
        todo = [i for i, r in enumerate(results) if r is None]
        skipped = len(tasks) - len(todo)
        self.tasks_run, self.tasks_resumed = self.tasks_run + len(todo), self.tasks_resumed + skipped
        prog = progress.PassProgress(desc, [tasks[i] for i in todo], skipped, self.workdir, self.opts.progress)
        assert self.executor is not None
        ok = False
        try:
            for j, r in self.executor.imap_unordered(*prog.wrap(fn, [tasks[i] for i in todo])):
                results[todo[j]] = r
                if self.mirrors:
                    self._publish([str(o[0]) for o in [*r.outputs, *r.scan_outputs]] + [markers[todo[j]]])
                prog.task_done(r)
                faults.driver_point(phase_of(tasks[todo[j]]))
            ok = True
        finally:
            prog.close(ok)
        if skipped:
            log.info("%s: %d of %d tasks already complete (resumed)", desc, skipped, len(tasks))
        return results  # type: ignore[return-value]

    def _run_global(self, plan: RunPlan, stages: dict[int, Stage], gi: int) -> str:
        spec = plan.stages[gi]
        stage = stages[gi]
        plan_path = None
        prev_plan = None
        for r in range(stage.rounds):
            path = str(spec.ctx.workdir / f"plan-round{r}.plan")
            bad_plan = False
            if not self.opts.force and os.path.exists(path):
                try:
                    plan_path, prev_plan = path, load_plan(path)
                    continue
                except BadWorkFile as e:
                    log.warning("%s; computing the plan again", e)
                    forget_plan(path)
                    bad_plan = True
            try:
                new_plan = self._global_round(plan, stage, spec, gi, r, plan_path, prev_plan)
            except (OSError, DcurateError) as e:
                if not bad_plan:
                    raise
                # the scan files the plan was computed from were already consumed by later rounds
                raise DcurateError(
                    f"{path}: malformed plan file, and the work files it was computed from are gone "
                    f"({e}); re-run with --force"
                ) from None
            faults.driver_point(f"reduce{r}")
            write_plan(path, new_plan)
            forget_plan(path)
            self._sync()
            plan_path, prev_plan = path, new_plan
        assert plan_path is not None
        return plan_path

    def _global_round(self, plan: RunPlan, stage: Stage, spec: StageSpec, gi: int, r: int,
                      plan_path: str | None, prev_plan: Any) -> Any:
        """Round ``r`` of global stage ``gi``: its scan (or the fused pass's partials), then reduce."""
        fused_results = self._fused_partials(plan, gi) if r == 0 and gi in plan.fused else None
        if fused_results is not None:
            results = fused_results
        else:
            sources = self._source_specs(plan, plan.global_source[gi])
            mdir = spec.ctx.workdir / f"scan-round{r}"
            markers = [str(mdir / f"{shard_info(s.piece).key}.done") for s in sources]
            tasks = [ScanTask(spec, plan.stages, s, r, plan_path, m) for s, m in zip(sources, markers, strict=True)]
            results = self._execute(run_scan_task, tasks, f"{spec.name} scan {r + 1}/{stage.rounds}", markers)
        partials = [(shard_info(p), res.partial) for p, res in zip(plan.pieces, results, strict=True)]
        if not (r == 0 and gi in plan.fused):  # a fused scan's pass already counted its seconds
            for res in results:
                for i, st in res.stats.items():
                    self.stats.setdefault(i, StageStats()).seconds += st.seconds
        t0 = time.perf_counter()
        assert self.executor is not None
        stage.ctx = spec.ctx
        with spec.ctx.mapping(self.executor.map):
            new_plan = driver_call(self.mirrors, lambda: stage.reduce(partials, r, prev_plan), prev_plan)
        log.debug("%s reduce %d/%d in %.2f s", spec.name, r + 1, stage.rounds, time.perf_counter() - t0)
        self.stats.setdefault(gi, StageStats()).seconds += time.perf_counter() - t0
        return new_plan

    def _fused_partials(self, plan: RunPlan, gi: int) -> list[TaskResult] | None:
        """Round-0 partials computed inside the pass feeding stage ``gi``, when that pass ran with
        this stage's current parameters (None otherwise: the stage scans the kept intermediate)."""
        p = plan.passes[plan.fused[gi]]
        loaded = [load_result(self._pass_marker(p, piece), self._size_of) for piece in plan.pieces]
        results = [x for x in loaded if x is not None]
        if len(results) != len(loaded):
            raise DcurateError(f"internal: scan partials of stage {plan.stages[gi].name} missing")
        if any(x.partial_key != plan.stages[gi].key or not outputs_hold(x.scan_outputs, self._size_of) for x in results):
            return None
        return results

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
                name = f"{piece.shard.index:06d}-{piece.index:04d}{FORMATS[fmt]}{WORK_SUFFIX}"
                out_path = str(self.workdir / "parts" / p.key / name)
                parts.setdefault(piece.shard.index, []).append(out_path)
            else:
                out_path = self._sink_path(p, piece.shard.stem, fmt)
            rej, rej_fmt = None, None
            if self.rejected and (p.maps or p.apply is not None):
                rej_fmt = fmt if p.sink != "intermediate" else self._out_fmt(piece.shard)
                suffix = f".{piece.index:04d}" if piece.n_pieces > 1 else ""
                rej = os.path.join(self.rejected, f"{p.index:02d}-{p.label.replace('(apply)', '')}",
                                   output_name(piece.shard.stem + suffix, rej_fmt))
            marker = self._pass_marker(p, piece)
            markers.append(marker)
            tasks.append(PassTask(p, plan.stages, src, apply_plan, out_path, fmt,
                                  o.compression_level if p.sink != "intermediate" else 1, rej, marker,
                                  final=p.sink == "final" and piece.n_pieces == 1, rejected_fmt=rej_fmt))
        if p.sink == "final":
            self._claim([self._sink_path(p, sh.stem, self._out_fmt(sh)) for sh in plan.shards])
        results = self._execute(run_pass_task, tasks, f"pass {p.index + 1}/{len(plan.passes)}: {p.label}", markers)
        self._sync()
        for res in results:
            for i, st in res.stats.items():
                self.stats.setdefault(i, StageStats()).add(st)
        if p.source == "input":
            self.bad_records += sum(r.bad_records for r in results)
        self._rows_out = {}
        for piece, res in zip(plan.pieces, results, strict=True):
            self._rows_out[(piece.shard.index, piece.index)] = res.rows_out
            if p.sink == "final" and piece.n_pieces == 1:
                self._record_final(res, res.rows_out)
        if parts:
            mtasks, mmarkers = [], []
            for sh in plan.shards:
                if sh.index not in parts:
                    continue
                fmt = self._out_fmt(sh)
                final = self._sink_path(p, sh.stem, fmt)
                m = str(self.workdir / "markers" / f"merge-{p.key}" / f"{sh.index:06d}.done")
                mmarkers.append(m)
                mtasks.append(MergeTask(parts[sh.index], final, fmt, o.compression_level, m))
            merged = self._execute(run_merge_task, mtasks, "merge pieces", mmarkers)
            if p.sink == "final":
                for t, res in zip(mtasks, merged, strict=True):
                    sh_index = next(sh.index for sh in plan.shards if self._sink_path(p, sh.stem, t.fmt) == t.final)
                    self._record_final(res, sum(v for (si, _), v in self._rows_out.items() if si == sh_index))

    def _sink_path(self, p: PassSpec, stem: str, fmt: str) -> str:
        """Where the last pass writes a shard: OUT, or the work folder before a reshard."""
        suffix = WORK_SUFFIX if p.sink == "prereshard" else ""
        return os.path.join(p.sink_dir, output_name(stem, fmt) + suffix)

    def _record_final(self, res: TaskResult, rows: int) -> None:
        path, size, checksum = res.outputs[0]
        self._final[str(path)] = (int(size), checksum, int(rows))

    def _reshard(self, plan: RunPlan) -> None:
        o = self.opts
        p = plan.passes[-1]
        files = []
        for sh in plan.shards:
            fmt = self._out_fmt(sh)
            rows = sum(v for (si, _), v in self._rows_out.items() if si == sh.index)
            files.append((self._sink_path(p, sh.stem, fmt), fmt, rows))
        total = sum(f[2] for f in files)
        size = o.shard_size
        assert size is not None
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
        self._claim([t.final for t in tasks])
        results = self._execute(run_reshard_task, tasks, "reshard", markers)
        for res in results:
            self._record_final(res, res.rows_out)

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
            "resumed": bool(self.tasks_resumed and not self.tasks_run),  # nothing left to do: all work was done before
            "stages": stages,
            "seconds": round(seconds, 3),
            "workers": self.workers,
            "peak_rss_mb": {"worker": round(self.peak_rss / 1e6, 1), "driver": round(_peak_rss() / 1e6, 1)},
        }

    def _print_summary(self, summary: dict[str, Any]) -> None:
        summary_table.print_summary(summary, self.output)

    def _print_plan(self, plan: RunPlan) -> None:
        if not self.opts.plan_json:
            print(planview.format_plan(self, plan))
            return
        print(json.dumps(planview.plan_json(self, plan), indent=2, default=str))  # URIs as given (planview)

    def _manifest_base(self, plan: RunPlan) -> dict[str, Any]:
        return {
            "dcurate_version": __version__,
            "inputs": [{"path": s.path, "format": s.fmt, "bytes": s.size, "mtime": s.mtime} for s in plan.shards],
            "output": self.output,
            "options": planview.options_shown(self.opts),  # secrets of storage_options masked
            "stages": [
                {"stage": s.name, "params": dataclasses.asdict(s.params), "hash": s.key} for s in plan.stages
            ],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

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
        """Keep the intermediates of this plan (so that changing a later stage recomputes only
        from there) and drop the pre-reshard copy of the output and every work entry of a
        superseded plan, so the work folder does not grow across reruns."""
        keep: dict[str, set[str]] = {name: set() for name in WORK_ENTRIES}
        for p in plan.passes:
            if p.sink == "prereshard":
                shutil.rmtree(p.sink_dir, ignore_errors=True)
                shutil.rmtree(self.workdir / "markers" / f"pass{p.index:02d}-{p.key}", ignore_errors=True)
                continue
            keep["markers"] |= {f"pass{p.index:02d}-{p.key}", f"merge-{p.key}"}
            keep["parts"].add(p.key)
            if p.sink == "intermediate":
                keep["passes"].add(os.path.basename(p.sink_dir))
        if self.opts.shard_size:
            keep["markers"].add(f"reshard-{digest(plan.passes[-1].key, self.opts.shard_size, self._out_fmt(plan.shards[0]))}")
        keep["stages"] = {s.ctx.workdir.name for s in plan.stages}
        keep["stdin"] = {"stdin.spool"}
        for name in ("markers", "passes", "stages", "parts", "prereshard"):
            folder = self.workdir / name
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name not in keep[name]:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


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
