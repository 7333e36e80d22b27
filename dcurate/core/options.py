"""Run-wide options shared by ``dcurate run`` recipes and every stage subcommand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dcurate.core.params import param


@dataclass
class RunOptions:
    workers: int | None = param(None, "Worker processes (default: number of CPUs). Outputs do not depend on it.", min=1)
    seed: int = param(0, "Seed for every stage with randomness (same seed => byte-identical output).")
    text_field: str = param("text", "Column holding the document text.")
    id_field: str = param("id", "Column holding document ids; when absent, '<shard-stem>/<row>' is added.")
    input_format: str | None = param(
        None, "Force the input format instead of detecting it from the extension.",
        choices=["parquet", "jsonl", "jsonl.gz", "jsonl.zst"],
    )
    output_format: str | None = param(
        None, "Output shard format (default: same as each input shard; '-' output is always JSONL).",
        choices=["parquet", "jsonl", "jsonl.gz", "jsonl.zst"],
    )
    compression_level: int | None = param(
        None, "zstd/gzip level of output shards (default: zstd 3 for .jsonl.zst, zstd 1 for Parquet as pyarrow, gzip 6).",
    )
    limit: int | None = param(None, "Only the first N documents of the input (smoke runs).", min=0)
    shard_size: int | None = param(
        None, "Re-shard the output into shards of N documents named part-00000... (default: one output shard per input shard).",
        min=1,
    )
    rejected: str | None = param(None, "Write dropped documents here, with a 'dcurate_reason' column.", path=True)
    on_bad_record: str = param(
        "error", "What to do with a malformed record (bad JSON, invalid UTF-8, null text): stop with an error, or skip and count it.",
        choices=["error", "skip"],
    )
    workdir: str | None = param(None, "Folder for markers, plans and work files (default: OUT/.dcurate/work).", path=True)
    allow_foreign: bool = param(
        False, "Run even though OUT holds data files dcurate did not write (they are left untouched).",
    )
    executor: str = param("local", "Where tasks run: a local process pool, or a Ray cluster.", choices=["local", "ray"])
    ray_address: str | None = param(
        None, "Ray cluster to run on with --executor ray (default: $RAY_ADDRESS; unset or empty = a private local instance).",
    )
    storage_options: dict[str, Any] = param(
        {}, "Object-store settings (endpoint_url, region, key, secret, ...) on top of the AWS_* variables; they reach Ray tasks too.",
        cli=False,
    )
    split_size: int = param(
        256 * 1024 * 1024,
        "Cut plain JSONL files and Parquet files larger than this many bytes into pieces processed in parallel (0 = never).",
        min=0,
    )
    overwrite_column: bool = param(
        False, "Let a stage replace a column that is already there (e.g. re-scoring quality) without a warning.",
    )
    force: bool = param(False, "Recompute everything instead of resuming completed work.")
    dry_run: bool = param(
        False, "Validate (recipe against the input's columns too) and print the plan: stages, passes, shards, "
        "estimated work; nothing runs.",
    )
    plan_json: bool = param(False, "With --dry-run: print the plan as JSON instead of text.", flag="--json")
    progress: bool = param(
        True, "Show progress: document-counting bars on a terminal, a log line every 10 s elsewhere.",
    )
    report: bool = param(True, "Write the HTML run report OUT/.dcurate/report.html at the end (see `dcurate report`).")
