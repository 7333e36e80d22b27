"""Gather what a run report needs from an output folder: the run summary, the manifest, the
cluster table and bounded samples of the output and of the rejected documents.

Every file of dcurate's own is located by :func:`run_files`, which tries the current layout
(``OUT/.dcurate/``) first and the older one (``OUT/stats.json``, ``OUT/_dcurate/``) second. Shards
are read a bounded number of rows at a time (the first rows of each shard), never whole.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dcurate.core.errors import InputError
from dcurate.io import BatchReader, Piece, Shard, expand_inputs

SAMPLE_ROWS = 20_000  # rows read per output shard at most (numbers and labels; text only for a few)
SAMPLE_TOTAL = 500_000  # rows read over all shards (fewer per shard when there are many shards)
MAX_SHARDS = 512  # shards read at most (evenly spread over the set)
TEXT_ROWS = 64  # rows per shard whose text is kept for examples
TEXT_DOCS = 256  # documents with text kept over all shards
TEXT_CHARS = 1_500  # characters of a document shown
REJECTED_ROWS = 5_000  # rows read per rejected shard
EXAMPLES = 3  # documents shown per reason / per kind


@dataclass
class RunFiles:
    """Where a run's own files are (None when absent)."""

    out: Path
    stats: Path | None
    manifest: Path | None
    clusters: Path | None
    report: Path  # the default HTML report path


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def run_files(out: str | os.PathLike) -> RunFiles:
    """Locate the run summary, manifest and cluster table of output folder ``out``: the
    ``OUT/.dcurate/`` layout first, then the older ``OUT/stats.json`` + ``OUT/_dcurate/``."""
    o = Path(out)
    new, old = o / ".dcurate", o / "_dcurate"
    return RunFiles(
        out=o,
        stats=_first(new / "stats.json", o / "stats.json"),
        manifest=_first(new / "manifest.json", old / "manifest.json"),
        clusters=_first(new / "clusters.arrow", new / "clusters.parquet", old / "clusters.arrow", old / "clusters.parquet"),
        report=new / "report.html",
    )


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    with open(path) as f:
        obj = json.load(f)
    return obj if isinstance(obj, dict) else {}


def read_cluster_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """The dedup cluster table, as Arrow IPC (.arrow/.feather) or Parquet."""
    p = str(path)
    if p.endswith((".arrow", ".feather", ".ipc")):
        import pyarrow.feather as feather

        return feather.read_table(p, columns=columns)
    import pyarrow.parquet as pq

    return pq.read_table(p, columns=columns)


@dataclass
class Sample:
    """A bounded sample of a shard set: the first rows of every shard."""

    shards: int = 0
    rows: int = 0
    complete: bool = True  # every row of every shard was read
    numeric: dict[str, list[np.ndarray]] = field(default_factory=dict)
    labels: dict[str, Counter] = field(default_factory=dict)  # low-cardinality string columns
    docs: list[dict[str, Any]] = field(default_factory=list)  # rows with (truncated) text
    columns: list[str] = field(default_factory=list)

    def values(self, column: str) -> np.ndarray:
        arrs = self.numeric.get(column, [])
        return np.concatenate(arrs) if arrs else np.zeros(0)


def _text_of(row: dict[str, Any], text_field: str) -> str:
    t = row.get(text_field)
    t = "" if t is None else str(t)
    return t if len(t) <= TEXT_CHARS else t[:TEXT_CHARS] + " …"


def sample_shards(
    shards: list[Shard],
    text_field: str = "text",
    id_field: str = "id",
    rows: int = SAMPLE_ROWS,
    text_rows: int = TEXT_ROWS,
    label_columns: tuple[str, ...] = ("domain",),
    keep_ids: set[str] | None = None,
) -> Sample:
    """Read at most ``rows`` rows of each shard: numeric columns, value counts of ``label_columns``
    and string columns ending in ``_bucket``, and the first ``text_rows`` documents (plus any whose
    id is in ``keep_ids``) with their text truncated."""
    s = Sample(shards=len(shards))
    if len(shards) > MAX_SHARDS:
        shards = [shards[i] for i in np.linspace(0, len(shards) - 1, MAX_SHARDS).round().astype(int)]
        s.complete = False
    rows = min(rows, max(SAMPLE_TOTAL // max(len(shards), 1), 200))
    for sh in shards:
        reader = BatchReader(Piece(sh, limit=rows + 1), text_field=text_field, id_field=id_field, require_text=False)
        n = 0
        for b in reader:
            if n + b.num_rows > rows:
                s.complete = False
                b = b.slice(0, max(rows - n, 0))
            for f in b.schema:
                if f.name not in s.columns:
                    s.columns.append(f.name)
                if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
                    arr = b.column(f.name).to_numpy(zero_copy_only=False).astype(np.float64)
                    s.numeric.setdefault(f.name, []).append(arr[~np.isnan(arr)])
                elif (f.name in label_columns or f.name.endswith("_bucket")) and (
                    pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
                ):
                    c = s.labels.setdefault(f.name, Counter())
                    c.update(v for v in b.column(f.name).to_pylist() if v is not None)
            want_text = max(min(text_rows - n, TEXT_DOCS - len(s.docs)), 0)
            ids = b.column(id_field).to_pylist() if id_field in b.schema.names else [None] * b.num_rows
            pick = list(range(min(want_text, b.num_rows)))
            if keep_ids:
                pick += [i for i in range(want_text, b.num_rows) if ids[i] in keep_ids]
            if pick:
                rows_ = b.take(pa.array(pick, pa.int64())).to_pylist()
                for r in rows_:
                    r[text_field] = _text_of(r, text_field)
                    r["_shard"] = sh.stem
                    s.docs.append(r)
            n += b.num_rows
            if n >= rows:
                break
        s.rows += n
    return s


def _shards(path: str | os.PathLike) -> list[Shard]:
    """The shards under ``path`` (none when there are none); a file whose bytes are Parquet is
    read as Parquet whatever its extension says."""
    try:
        shards = expand_inputs([str(path)])
    except InputError:
        return []
    out = []
    for sh in shards:
        if sh.fmt != "parquet" and sh.path != "-":
            with open(sh.path, "rb") as f:
                if f.read(4) == b"PAR1":
                    sh = expand_inputs([sh.path], input_format="parquet")[0]
        out.append(sh)
    return out


@dataclass
class RunData:
    """Everything the report shows, read from one output folder."""

    files: RunFiles
    summary: dict[str, Any]
    manifest: dict[str, Any]
    output: Sample
    rejected: dict[str, list[dict[str, Any]]]  # reason -> example rows
    rejected_dir: str | None
    clusters: pa.Table | None
    cluster_docs: dict[str, dict[str, Any]]  # id -> row, for the clusters shown side by side
    inputs: Sample | None  # sample of the run's inputs (for the domain mixture before)
    text_field: str = "text"
    id_field: str = "id"


def _rejected_examples(root: str, text_field: str, id_field: str, keep_ids: set[str]) -> tuple[dict, dict]:
    """Up to EXAMPLES rows per dcurate_reason from the first rows of each rejected shard, and
    the rows whose id is in ``keep_ids``."""
    by_reason: dict[str, list[dict[str, Any]]] = {}
    found: dict[str, dict[str, Any]] = {}
    counts: Counter = Counter()
    shards = _shards(root)
    if len(shards) > MAX_SHARDS:
        shards = [shards[i] for i in np.linspace(0, len(shards) - 1, MAX_SHARDS).round().astype(int)]
    for sh in shards:
        reader = BatchReader(Piece(sh, limit=REJECTED_ROWS), text_field=text_field, id_field=id_field, require_text=False)
        for b in reader:
            if "dcurate_reason" not in b.schema.names:
                break
            reasons = b.column("dcurate_reason").to_pylist()
            ids = b.column(id_field).to_pylist() if id_field in b.schema.names else [None] * b.num_rows
            pick = []
            for i, r in enumerate(reasons):
                if counts[str(r)] < EXAMPLES:
                    counts[str(r)] += 1
                    pick.append(i)
                elif ids[i] in keep_ids:
                    pick.append(i)
            if not pick:
                continue
            for i, row in zip(pick, b.take(pa.array(pick, pa.int64())).to_pylist(), strict=True):
                row[text_field] = _text_of(row, text_field)
                row["_shard"] = sh.stem
                lst = by_reason.setdefault(str(reasons[i]), [])
                if len(lst) < EXAMPLES:
                    lst.append(row)
                if ids[i] in keep_ids:
                    found[str(ids[i])] = row
    return by_reason, found


def _cluster_candidates(table: pa.Table, n_clusters: int = 40) -> set[str]:
    """Ids of the members of the largest clusters (ties: lowest cluster id)."""
    if table.num_rows == 0:
        return set()
    cl = table.column("cluster").to_numpy()
    size = table.column("size").to_numpy()
    order = np.lexsort((cl, -size))
    chosen: list[int] = []
    for c in cl[order]:
        if c not in chosen:
            chosen.append(int(c))
            if len(chosen) >= n_clusters:
                break
    mask = np.isin(cl, np.array(chosen))
    return {str(x) for x in np.asarray(table.column("id").to_pylist(), dtype=object)[mask]}


def collect(out: str | os.PathLike) -> RunData:
    """Read everything the report shows from output folder ``out`` (bounded)."""
    files = run_files(out)
    if files.stats is None:
        raise InputError(f"{out}: no run summary here (stats.json); is it the OUT of a `dcurate run`?")
    summary = _read_json(files.stats)
    manifest = _read_json(files.manifest)
    opts = manifest.get("options", {}) or {}
    text_field = opts.get("text_field") or "text"
    id_field = opts.get("id_field") or "id"

    clusters_path = files.clusters
    if clusters_path is None:
        for st in summary.get("stages", []):
            p = st.get("clusters_file")
            if p and os.path.isfile(p):
                clusters_path = Path(p)
    clusters = None
    keep_ids: set[str] = set()
    if clusters_path is not None:
        clusters = read_cluster_table(clusters_path)
        clusters = clusters.select([c for c in ("cluster", "id", "kept", "jaccard", "size") if c in clusters.column_names])
        if {"cluster", "id", "size"} <= set(clusters.column_names):
            keep_ids = _cluster_candidates(clusters)
        else:
            clusters = None

    output = sample_shards(_shards(out), text_field, id_field, keep_ids=keep_ids)
    rejected_dir = opts.get("rejected")
    rejected: dict[str, list[dict[str, Any]]] = {}
    cluster_docs = {str(d[id_field]): d for d in output.docs if d.get(id_field) in keep_ids}
    if rejected_dir and os.path.isdir(rejected_dir):
        rejected, found = _rejected_examples(rejected_dir, text_field, id_field, keep_ids)
        cluster_docs.update(found)
    else:
        rejected_dir = None

    inputs = None
    if "domain" in output.labels:
        in_paths = [i["path"] for i in manifest.get("inputs", []) if os.path.isfile(i.get("path", ""))]
        try:
            in_shards = expand_inputs(in_paths, opts.get("input_format")) if in_paths else []
        except InputError:
            in_shards = []
        if in_shards:
            inputs = sample_shards(in_shards, text_field, id_field, text_rows=0)
    return RunData(files, summary, manifest, output, rejected, rejected_dir, clusters, cluster_docs, inputs,
                   text_field, id_field)
