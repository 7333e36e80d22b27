"""The names of the stages, in one place: the registry (dcurate.core.stage), the console entry's
pre-start (dcurate.cli.entry) and the CLI's help read them. Kept import-free: the console entry
reads it before importing anything heavy. Stage ``x`` lives in ``dcurate.stages.x.stage``."""

STAGE_NAMES: tuple[str, ...] = ("filter", "dedup", "quality", "perplexity", "select", "mix")
