"""The ``dcurate`` console entry point.

Before importing anything heavy, a data command (a stage, ``run`` or ``reshard``) that may use more
than one worker starts the process pool's fork server, which imports and warms the stage modules on
another core while this process imports the CLI; pools then start in milliseconds."""

import importlib
import os
import sys
from typing import Any

from dcurate.core.errors import is_interrupt
from dcurate.core.names import STAGE_NAMES

_DATA_COMMANDS = {"run", "reshard", *STAGE_NAMES}
#: Options of the whole CLI that may stand anywhere on the line (see dcurate.cli.app), with whether
#: they take a value.
_GLOBAL_OPTIONS = {"-v": False, "--verbose": False, "-q": False, "--quiet": False, "--log-format": True}


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
    argv = _command_line(argv)
    if len(argv) < 2 or argv[1] not in _DATA_COMMANDS or {"--help", "-h", "--dry-run"} & set(argv):
        return False
    if argv[1] != "run" and "--workers" not in argv and _input_bytes(argv[:-1], SMALL_INPUT_BYTES) < SMALL_INPUT_BYTES:
        return False
    if "--workers" in argv:
        i = argv.index("--workers")
        return i + 1 < len(argv) and argv[i + 1] != "1"
    return (os.cpu_count() or 1) > 1


def _command_line(argv: list[str]) -> list[str]:
    """``argv`` without the global options (``dcurate -v run r.yaml`` reads as ``dcurate run r.yaml``)."""
    out = argv[:1]
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a.split("=", 1)[0] in _GLOBAL_OPTIONS:
            skip = _GLOBAL_OPTIONS[a.split("=", 1)[0]] and "=" not in a
        else:
            out.append(a)
    return out


def _cli_options(argv: list[str]) -> dict[str, Any]:
    """The ``--name value`` / ``--name=value`` options of a stage command, keyed like the recipe
    (``--gzip-engine auto`` -> ``gzip_engine``); a flag without a value reads as True."""
    opts: dict[str, Any] = {}
    for i, a in enumerate(argv[2:], start=2):
        if not a.startswith("--") or a == "--":
            continue
        key, eq, value = a[2:].partition("=")
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if eq:
            opts[key.replace("-", "_")] = value
        else:
            opts[key.replace("-", "_")] = nxt if nxt is not None and not nxt.startswith("--") else True
    return opts


def _preload(name: str, options: dict[str, Any]) -> list[str]:
    """Modules besides ``dcurate.stages.<name>.stage`` that a stage with these options uses: the
    stage package's own ``preload_modules(options)`` (import-free), as its stage class does."""
    hook = getattr(importlib.import_module(f"dcurate.stages.{name}"), "preload_modules", None)
    return list(hook(options)) if hook is not None else []


def _stage_modules(argv: list[str]) -> list[str]:
    """The stage modules the command will use (for `run`, read from the recipe's stages)."""
    argv = _command_line(argv)
    if len(argv) < 2:
        return []
    stages: list[dict] = [{**_cli_options(argv), "stage": argv[1]}]
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
        if name in STAGE_NAMES:
            out.append(f"dcurate.stages.{name}.stage")
            out += _preload(name, {str(k).replace("-", "_"): v for k, v in s.items()})
    return list(dict.fromkeys(out))


#: Packages a command never uses but that its libraries import when installed (see
#: dcurate.runner.imports): together over a third of a small job's cost.
_UNUSED_PACKAGES = {"dedup": ("pandas", "scipy")}


def main() -> None:
    try:
        _main()
    except Exception as e:  # noqa: BLE001 - re-raised unless it is a Ctrl-C in disguise
        if not is_interrupt(e):
            raise
        _say_interrupted()
    except KeyboardInterrupt:  # Ctrl-C while starting up, before the CLI's own handler is in place
        _say_interrupted()


def _say_interrupted() -> None:
    try:  # straight to the file descriptor: os._exit drops what a stream still buffers
        sys.stderr.flush()
    except (OSError, ValueError, RuntimeError):
        pass
    try:
        os.write(2, b"dcurate: interrupted; re-run the same command to resume\n")
    except OSError:
        pass
    os._exit(130)


def _main() -> None:
    argv = _command_line(sys.argv)
    if len(argv) > 1 and argv[1] in _DATA_COMMANDS:
        from dcurate.runner.malloc import tune

        tune()  # before the fork server starts: it and the pool inherit the settings
    unused = _UNUSED_PACKAGES.get(argv[1] if len(argv) > 1 else "", ())
    if unused:
        from dcurate.runner.imports import hide

        hide(unused)
    if _wants_pool(argv) and os.environ.get("DCURATE_NO_PRESTART") is None:
        from dcurate.runner.executor import prestart_fork_server

        prestart_fork_server(_stage_modules(argv))
    if len(argv) > 1 and argv[1] in STAGE_NAMES and not any(k.startswith("_DCURATE") for k in os.environ):
        import dcurate.cli  # one stage's command: the app imports only its module (not completion)

        dcurate.cli.ONLY_STAGE = argv[1]
    from dcurate.cli.app import main as cli_main

    cli_main()
