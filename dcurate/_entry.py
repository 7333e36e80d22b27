"""The ``dcurate`` console entry point.

Before importing anything heavy, a data command (a stage, ``run`` or ``reshard``) that may use more
than one worker starts the process pool's fork server, which imports and warms the stage modules on
another core while this process imports the CLI; pools then start in milliseconds."""

import os
import sys

_DATA_COMMANDS = {"run", "reshard", "filter", "dedup", "quality", "perplexity", "select", "mix"}
_STAGE_MODULES = ["filter", "dedup", "quality", "perplexity", "select", "mix"]


def _wants_pool(argv: list[str]) -> bool:
    if len(argv) < 2 or argv[1] not in _DATA_COMMANDS or "--help" in argv or "--dry-run" in argv:
        return False
    if "--workers" in argv:
        i = argv.index("--workers")
        return i + 1 < len(argv) and argv[i + 1] != "1"
    return (os.cpu_count() or 1) > 1


def _stage_modules(argv: list[str]) -> list[str]:
    """The stage modules the command will use (for `run`, read from the recipe's stage names)."""
    names = [argv[1]]
    if argv[1] == "run" and len(argv) > 2:
        try:
            import yaml

            with open(argv[2]) as f:
                doc = yaml.safe_load(f)
            names = [str(s.get("stage")) for s in doc.get("stages") or [] if isinstance(s, dict)]
        except Exception:  # noqa: BLE001 - the real run reports recipe errors properly
            names = []
    return [f"dcurate.stages.{n}" for n in names if n in _STAGE_MODULES]


def main() -> None:
    if _wants_pool(sys.argv) and os.environ.get("DCURATE_NO_PRESTART") is None:
        from .executor import prestart_fork_server

        prestart_fork_server(_stage_modules(sys.argv))
    from .cli import main as cli_main

    cli_main()
