"""dcurate: curate large text corpora for language-model training.

Streaming stages (dedup, quality, select, mix, filter) over sharded Parquet / JSONL, chained by
YAML recipes and run in parallel with resume. See README.md.
"""

__version__ = "0.1.0"
