"""The ``dcurate`` console entry point.

Before importing anything heavy, a data command (a stage, ``run`` or ``reshard``) that may use more
than one worker starts the process pool's fork server, which imports and warms the stage modules on
another core while this process imports the CLI; pools then start in milliseconds."""

import os
import sys

_DATA_COMMANDS = {"run", "reshard", "filter", "dedup", "quality", "perplexity", "select", "mix"}
_STAGE_MODULES = ["filter", "dedup", "quality", "perplexity", "select", "mix"]


#: Inputs below this many bytes run in one process unless --workers says otherwise: a pool's start
#: (imports and kernel warm-up in the fork server, ~1 CPU second) costs more than it saves.
SMALL_INPUT_BYTES = 8 << 20


def _input_bytes(argv: list[str], limit: int) -> int:
    """Bytes of the existing files and folders named in ``argv`` (stops counting past ``limit``)."""
    total = 0
    for a in argv[2:]:
        if a == "-":
            return limit + 1  # standard input: size unknown, assume large
        if a.startswith("-") or not os.path.exists(a):
            continue
        if os.path.isfile(a):
            total += os.path.getsize(a)
        else:
            for root, _, files in os.walk(a):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
                if total > limit:
                    return total
        if total > limit:
            return total
    return total


def _wants_pool(argv: list[str]) -> bool:
    if len(argv) < 2 or argv[1] not in _DATA_COMMANDS or {"--help", "-h", "--dry-run"} & set(argv):
        return False
    if argv[1] != "run" and "--workers" not in argv and _input_bytes(argv[:-1], SMALL_INPUT_BYTES) < SMALL_INPUT_BYTES:
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
        opts: dict[str, str | None] = {"preset": None, "rules": None}
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


#: Packages a command never uses but that its libraries import when installed (see
#: dcurate.runner.imports): together over a third of a small job's cost.
_UNUSED_PACKAGES = {"dedup": ("pandas", "scipy")}


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
    unused = _UNUSED_PACKAGES.get(sys.argv[1] if len(sys.argv) > 1 else "", ())
    if unused:
        from dcurate.runner.imports import hide

        hide(unused)
    if _wants_pool(sys.argv) and os.environ.get("DCURATE_NO_PRESTART") is None:
        from dcurate.runner.executor import prestart_fork_server

        prestart_fork_server(_stage_modules(sys.argv))
    from dcurate.cli.app import main as cli_main

    cli_main()
