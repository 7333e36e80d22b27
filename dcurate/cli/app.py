"""The ``dcurate`` command line. Every registered stage is a subcommand ``dcurate STAGE IN... OUT``
whose flags are generated from the stage's parameter dataclass (the same keys a recipe uses), plus
the run options shared by all stages. Stage modules may add commands with ``register_cli(app)``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import typing
from typing import Any, Optional

import click
import typer

from dcurate import __version__
from dcurate.core import params as P
from dcurate.core.errors import EXIT_BROKEN_PIPE, EXIT_DATA, EXIT_INTERRUPTED, RecipeError, explain
from dcurate.core.options import RunOptions
from dcurate.core.stage import load_stage_modules, registry

app = typer.Typer(
    name="dcurate",
    help=(
        "Curate large text corpora for language-model training: dedup, quality, select, mix, filter.\n\n"
        "Example: dcurate run configs/demo.yaml --workers 2"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dcurate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail to stderr."),
) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="dcurate: %(message)s", stream=sys.stderr
    )


def _cli_type(tp: Any, optional: bool) -> Any:
    if tp is bool:
        return Optional[bool] if optional else bool
    if tp in (int, float, str):
        return Optional[tp] if optional else tp
    return Optional[str]  # lists and mappings are given as comma-separated strings


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_parameters(cls: type, none_defaults: bool = False, skip: set[str] | None = None) -> list[inspect.Parameter]:
    """typer parameters for every CLI field of a params dataclass."""
    out = []
    types = P.field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True) or (skip and f.name in skip):
            continue
        tp, optional = types[f.name]
        if f.default is not dataclasses.MISSING and not isinstance(f.default, (list, dict)):
            default = f.default
        else:
            default = None
        if tp in (list, dict) or typing.get_origin(tp) in (list, dict):
            default = None
        if none_defaults:
            default = None
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" [one of: {', '.join(f.metadata['choices'])}]"
        flag = _flag(f)
        decls = [f"{flag}/--no-{flag[2:]}"] if tp is bool else [flag]
        annotation = _cli_type(tp, optional or none_defaults or default is None)
        required = (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) and not none_defaults
        opt = typer.Option(... if required else default, *decls, help=help_text, show_default=not none_defaults)
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation))
    return out


def _given(kwargs: dict[str, Any], cls: type) -> dict[str, Any]:
    """The CLI values for ``cls``'s fields that differ from "not given"."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in kwargs.items() if k in names and v is not None}


def check_output_folder(out: str, where: str) -> None:
    """OUT must be a folder (or '-'): an existing file there is a usage error, typically a glob
    that expanded into the inputs and swallowed OUT."""
    import os

    if out != "-" and os.path.lexists(out) and not os.path.isdir(out):
        raise RecipeError(
            f"{where}: the output {out} is an existing file, not a folder (the last argument is the "
            "output folder; did a glob expand to the inputs only?)"
        )


def _make_stage_command(cls: type) -> None:
    stage_fields = {f.name for f in dataclasses.fields(cls.Params)}
    paths = inspect.Parameter(
        "paths", inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(..., help="Input files/dirs/globs ('-' = stdin) followed by the OUT directory ('-' = stdout).",
                               metavar="IN... OUT", show_default=False),
        annotation=list[str],
    )
    params = [paths] + option_parameters(cls.Params) + option_parameters(RunOptions, skip=stage_fields)

    def command(**kwargs: Any) -> None:
        paths = kwargs.pop("paths")
        if len(paths) < 2:
            raise RecipeError(f"dcurate {cls.name}: give at least one input and the output: IN... OUT")
        where = f"dcurate {cls.name}"
        check_output_folder(paths[-1], where)
        _OUTPUT[0] = paths[-1]
        stage_params = P.build(cls.Params, _given(kwargs, cls.Params), where)
        opts = P.build(RunOptions, _given(kwargs, RunOptions), where)
        from dcurate.runner.driver import run

        run(paths[:-1], paths[-1], [(cls.name, stage_params)], opts)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = cls.name.replace("-", "_")
    doc = (cls.__doc__ or cls.summary or "").strip()
    summary = cls.summary or doc.split("\n")[0]
    epilog = f"Example: {cls.example}" if cls.example else None
    app.command(name=cls.name, help=doc or summary, short_help=summary, epilog=epilog)(command)


def _make_run_command() -> None:
    recipe = inspect.Parameter(
        "recipe", inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(..., help="YAML recipe: input, output, options and stages."), annotation=str,
    )
    params = [recipe] + option_parameters(RunOptions, none_defaults=True)

    def command(**kwargs: Any) -> None:
        from dcurate.runner.driver import run
        from dcurate.runner.recipe import load

        r = load(kwargs.pop("recipe"), _given(kwargs, RunOptions))
        check_output_folder(str(r.output), "dcurate run")
        _OUTPUT[0] = str(r.output)
        run(r.inputs, r.output, r.stages, r.options)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    app.command(
        name="run",
        help="Run a YAML recipe: chained stages over sharded data, in parallel, resuming after a crash.\n\n"
        "Flags given here override the recipe's values.",
        epilog="Example: dcurate run configs/demo.yaml --workers 4 --dry-run",
    )(command)


@app.command("stats", epilog="Example: dcurate stats data/demo/out --column domain")
def stats_command(
    paths: list[str] = typer.Argument(..., help="Shard files, directories or globs."),
    column: str | None = typer.Option(None, "--column", help="Count the values of this column (default: domain, if present)."),
    text_field: str = typer.Option("text", "--text-field", help="Column holding the text."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarise any shard set: documents, bytes, columns, value counts and numeric quantiles."""
    from dcurate.report.stats import describe, format_description

    d = describe(paths, text_field=text_field, column=column)
    if as_json:
        import json

        typer.echo(json.dumps(d, indent=2))
    else:
        typer.echo(format_description(d))


@app.command("reshard", epilog="Example: dcurate reshard big.jsonl.zst shards/ --shard-size 100000 --output-format parquet")
def reshard_command(
    paths: list[str] = typer.Argument(..., metavar="IN... OUT", help="Inputs followed by the output directory."),
    shard_size: int = typer.Option(..., "--shard-size", help="Documents per output shard.", min=1),
    output_format: str | None = typer.Option(None, "--output-format", help="parquet, jsonl, jsonl.gz or jsonl.zst."),
    compression_level: int | None = typer.Option(None, "--compression-level"),
    text_field: str = typer.Option("text", "--text-field"),
    id_field: str = typer.Option("id", "--id-field"),
    workers: int | None = typer.Option(None, "--workers"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Cut inputs (e.g. one big compressed JSONL file that cannot be split) into shards of N documents."""
    from dcurate.runner.driver import run

    if len(paths) < 2:
        raise RecipeError("dcurate reshard: give at least one input and the output: IN... OUT")
    check_output_folder(paths[-1], "dcurate reshard")
    _OUTPUT[0] = paths[-1]
    opts = P.build(
        RunOptions,
        {k: v for k, v in dict(shard_size=shard_size, output_format=output_format, compression_level=compression_level,
                               text_field=text_field, id_field=id_field, workers=workers, force=force).items() if v is not None},
        "dcurate reshard",
    )
    run(paths[:-1], paths[-1], [], opts)


def _exit_quietly_on_broken_pipe() -> None:
    """The reader of our stdout went away (``dcurate ... - | head``): stop without a word."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise typer.Exit(EXIT_BROKEN_PIPE)


#: The output of the command being run (named by one-line errors about writes that name no file).
_OUTPUT: list[str | None] = [None]


def _friendly(fn):
    """Every failure is one line (no traceback) with its exit code: 1 data/run, 2 usage, 130 Ctrl-C.
    Unexpected exceptions are one line too; DCURATE_TRACEBACK=1 shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise  # click prints usage errors itself (exit 2)
        except KeyboardInterrupt:
            fail("interrupted; re-run the same command to resume", EXIT_INTERRUPTED, prefix="dcurate: ")
        except BrokenPipeError:
            _exit_quietly_on_broken_pipe()
        except Exception as e:  # noqa: BLE001 - one line for everything; see DCURATE_TRACEBACK
            import errno
            import os

            if isinstance(e, OSError) and e.errno == errno.EPIPE:
                _exit_quietly_on_broken_pipe()
            if os.environ.get("DCURATE_TRACEBACK"):
                raise
            known = explain(e, _OUTPUT[0])
            if known is None:
                msg = f"internal error: {type(e).__name__}: {e}".splitlines()[0][:500]
                fail(msg + " (a bug; DCURATE_TRACEBACK=1 shows the traceback)", EXIT_DATA)
            else:
                fail(known[0], known[1])

    return wrapper


def fail(message: str, code: int, prefix: str = "dcurate: error: ") -> None:
    """Print one line to stderr and exit with ``code``."""
    line = " ".join(str(message).split("\n")).strip()
    try:
        typer.echo(prefix + line, err=True)
    except (OSError, ValueError):
        pass
    raise typer.Exit(code)


def _build_app() -> None:
    mods = load_stage_modules()
    for cls in sorted(registry().values(), key=lambda c: c.name):
        _make_stage_command(cls)
    _make_run_command()
    for m in mods:
        hook = getattr(m, "register_cli", None)
        if hook is not None:
            hook(app)
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_dcurate_friendly", False):
            info.callback = _friendly(info.callback)
            info.callback._dcurate_friendly = True  # type: ignore[attr-defined]


_build_app()


def main() -> None:
    """Console entry point (see dcurate.cli.entry, which the `dcurate` script calls)."""
    try:
        app()
    except BrokenPipeError:
        _exit_quietly_on_broken_pipe_final()


def _exit_quietly_on_broken_pipe_final() -> None:
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


if __name__ == "__main__":
    main()
