"""The plans ``--dry-run`` prints: readable text, or JSON with ``--json``.

Both name every folder as the user gave it: an OUT, ``--workdir`` or ``--rejected`` on object
storage is shown as its URI, never as the local staging folder a run mirrors it through; secrets
in ``storage_options`` are masked."""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow.parquet as pq

from dcurate.io import storage

#: storage_options keys whose values are masked in printed plans (any key containing one of these).
_SECRET_PARTS = ("secret", "token", "password", "credential", "access_key")
_MASK = "***"


def _docs(shards: list[Any]) -> int | None:
    """Documents in the input, when Parquet metadata says so without reading."""
    total = 0
    for s in shards:
        if s.fmt != "parquet":
            return None
        try:
            total += pq.ParquetFile(storage.parquet_source(s.path)).metadata.num_rows
        except Exception:  # noqa: BLE001 - an estimate only
            return None
    return total


def shown_workdir(runner: Any) -> str:
    """The work folder as the user names it: --workdir as given, else OUT/.dcurate/work, also when
    OUT or --workdir is a URI staged through a local folder."""
    o = runner.opts
    if o.workdir:
        return str(o.workdir)
    if not runner.to_stdout and storage.is_uri(runner.output):
        return runner.output.rstrip("/") + "/.dcurate/work"
    work = str(runner.workdir)
    for m in getattr(runner, "mirrors", []):  # a folder on the store: name the URI, not its staging folder
        work = work.replace(str(m.local), m.uri)
    return work


def masked(options: Any) -> Any:
    """``options`` (nested mappings) with the values of secret-looking keys replaced by ``***``."""
    if isinstance(options, dict):
        return {k: (_MASK if v and any(s in str(k).lower() for s in _SECRET_PARTS) else masked(v))
                for k, v in options.items()}
    return options


def options_shown(opts: Any) -> dict[str, Any]:
    """The run options as plans and the manifest record them: secrets of storage_options masked."""
    out = dataclasses.asdict(opts)
    out["storage_options"] = masked(out.get("storage_options") or {})
    return out


def plan_json(runner: Any, plan: Any) -> dict[str, Any]:
    """The JSON plan (``--dry-run --json``)."""
    opts = options_shown(runner.opts)
    return {
        "inputs": [{"path": s.path, "format": s.fmt, "stem": s.stem, "bytes": s.size} for s in plan.shards],
        "pieces": len(plan.pieces),
        "output": runner.output,
        "workdir": shown_workdir(runner),
        "rejected": runner.opts.rejected,
        "options": opts,
        "stages": [
            {"index": s.index, "stage": s.name, "kind": runner._kind(s), "params": s.build().describe()}
            for s in plan.stages
        ],
        "passes": [
            {"pass": p.index, "stages": p.label, "reads": p.source if p.source == "input" else "intermediate",
             "writes": p.sink}
            for p in plan.passes
        ],
    }


def _changed(params: Any) -> str:
    """Parameters that differ from their defaults, as key=value."""
    out = []
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if v != default:
            out.append(f"{f.name}={v}")
    return " ".join(out) or "(defaults)"


def _flat(v: Any) -> str:
    if isinstance(v, dict):
        return "  ".join(f"{k}={_flat(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_plan(runner: Any, plan: Any) -> str:
    o = runner.opts
    fmts = sorted({s.fmt for s in plan.shards})
    size = sum(s.size or 0 for s in plan.shards)
    docs = _docs(plan.shards)
    lines = ["dry run: the recipe is valid; nothing was read or written (--json for the JSON plan)", ""]
    lines.append(f"input   {len(plan.shards)} shard(s), {', '.join(fmts)}, {size / 1e6:,.1f} MB on disk"
                 + (f", {docs:,} documents" if docs is not None else "")
                 + (f"; {len(plan.pieces)} pieces (files over {o.split_size / 2**20:.0f} MiB are cut)"
                    if len(plan.pieces) != len(plan.shards) else ""))
    if o.limit is not None:
        lines.append(f"        only the first {o.limit:,} documents (--limit)")
    out_fmt = o.output_format or "same as each input shard"
    lines.append(f"output  {runner.output} ({out_fmt}"
                 + (f", re-sharded into {o.shard_size:,} documents per shard" if o.shard_size else "") + ")")
    if o.rejected:
        lines.append(f"rejected documents  {o.rejected}")
    lines.append(f"work folder  {shown_workdir(runner)}")
    lines.append(f"workers  {runner.workers}   seed  {o.seed}   executor  {o.executor}")
    lines.append("")
    lines.append("stages")
    scans = 0
    for s in plan.stages:
        st = s.build()
        kind = runner._kind(s)
        extra = ""
        if kind == "global":
            scans += st.rounds
            extra = f", {st.rounds} scan round(s) over all shards, then applied"
        lines.append(f"  {s.index} {s.name:<11} ({kind}{extra})  {_changed(s.params)}")
        names = {f.name for f in dataclasses.fields(s.params)}
        for k, v in st.describe().items():  # resolved values a stage derives (e.g. dedup's LSH bands)
            if k not in names:
                lines.append(f"      {k}: {_flat(v)}")
    lines.append("")
    lines.append("passes (each reads every piece once)")
    for p in plan.passes:
        reads = "the input" if p.source == "input" else "the previous pass's intermediate files"
        writes = {"final": "the output", "prereshard": "the output (before re-sharding)",
                  "intermediate": "intermediate files"}[p.sink]
        fused = f"; stage {p.fused_scan} scans it on the way" if p.fused_scan is not None else ""
        lines.append(f"  pass {p.index + 1}/{len(plan.passes)}  {p.label}: reads {reads}, writes {writes}{fused}")
    unfused = scans - len(plan.fused)
    tasks = len(plan.pieces) * (len(plan.passes) + unfused)
    lines.append("")
    lines.append(f"estimated work  {len(plan.passes)} pass(es) + {unfused} separate scan(s) over "
                 f"{size / 1e6:,.1f} MB = {tasks:,} tasks on {runner.workers} worker(s)")
    return "\n".join(lines)
