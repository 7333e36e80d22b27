"""Looking at shard sets and runs: summaries (stats)."""
