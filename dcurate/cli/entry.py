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


def _filter_rules_off(stage: dict) -> bool:
    """A filter stage with no text rule (``preset: none``, no ``rules``) needs no rule module."""
    return str(stage.get("preset")) == "none" and not stage.get("rules")


def _stage_modules(argv: list[str]) -> list[str]:
    """The stage modules the command will use (for `run`, read from the recipe's stage names)."""
    stages: list[dict] = [{"stage": argv[1]}]
    if argv[1] == "filter":
        opts = {"preset": None, "rules": None}
        for k in opts:
            flag = f"--{k}"
            if flag in argv and argv.index(flag) + 1 < len(argv):
                opts[k] = argv[argv.index(flag) + 1]
        stages = [{"stage": "filter", **opts}]
    if argv[1] == "run" and len(argv) > 2:
        try:
            import yaml

            with open(argv[2]) as f:
                doc = yaml.safe_load(f)
            stages = [s for s in doc.get("stages") or [] if isinstance(s, dict)]
        except Exception:  # noqa: BLE001 - the real run reports recipe errors properly
            stages = []
    out = []
    for s in stages:
        name = str(s.get("stage"))
        if name in _STAGE_MODULES:
            out.append(f"dcurate.stages.{name}.stage")
            if name == "filter" and not _filter_rules_off(s):
                out.append("dcurate.stages.filter.rules")
    return list(dict.fromkeys(out))


def main() -> None:
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C while starting up, before the CLI's own handler is in place
        try:
            sys.stderr.write("dcurate: interrupted; re-run the same command to resume\n")
        except OSError:
            pass
        os._exit(130)


def _main() -> None:
    if _wants_pool(sys.argv) and os.environ.get("DCURATE_NO_PRESTART") is None:
        from dcurate.runner.executor import prestart_fork_server

        prestart_fork_server(_stage_modules(sys.argv))
    from dcurate.cli.app import main as cli_main

    cli_main()
