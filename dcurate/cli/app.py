"""The ``dcurate`` command line. Every registered stage is a subcommand ``dcurate STAGE IN... OUT``
whose flags are generated from the stage's parameter dataclass (the same keys a recipe uses), plus
the run options shared by all stages. Stage modules may add commands with ``register_cli(app)``."""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import os
import sys
import typing
from typing import Any, Optional

import click
import typer
from typer.core import TyperCommand, TyperGroup

from dcurate.cli import logs
from dcurate.core import params as core_params
from dcurate.core.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_DATA,
    EXIT_INTERRUPTED,
    DcurateError,
    RecipeError,
    explain,
    is_interrupt,
)
from dcurate.core.names import STAGE_NAMES
from dcurate.core.options import RunOptions
from dcurate.core.stage import Stage, get_stage, load_stage_modules, registry
from dcurate.core.version import __version__


class _Group(TyperGroup):
    """The root command: takes the logging flags out of the arguments wherever they are, and
    lists commands with their whole one-line summary."""

    def main(self, args: Any = None, *a: Any, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            argv, flags = logs.extract(argv)
        except DcurateError as e:
            typer.echo(f"dcurate: error: {e}", err=True)
            sys.exit(2)
        logs.configure(flags)
        try:
            return super().main(argv, *a, **kw)
        except SystemExit as e:
            # Ctrl-C while click parses the command line: click exits 130 without a word
            if e.code == EXIT_INTERRUPTED and not _INTERRUPT_SAID[0]:
                _INTERRUPT_SAID[0] = True
                try:
                    typer.echo("dcurate: interrupted; re-run the same command to resume", err=True)
                except (OSError, ValueError):
                    pass
            raise


_STAGE_FIELDS: dict[str, set[str]] = {}


class _StageCommand(TyperCommand):
    """A stage command whose help lists the stage's own options first and the run options shared
    by every stage under their own heading."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        own: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        run_names = {f.name for f in dataclasses.fields(RunOptions)} - _STAGE_FIELDS.get(self.name or "", set())
        for param in self.get_params(ctx):
            rec = param.get_help_record(ctx)
            if rec is None:
                continue
            (shared if param.name in run_names else own).append(rec)
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if shared:
            with formatter.section("Run options (shared by every stage; also keys of a recipe)"):
                formatter.write_dl(shared)


app = typer.Typer(
    name="dcurate",
    cls=_Group,
    help=(
        f"Curate large text corpora for language-model training: {', '.join(STAGE_NAMES)}.\n\n"
        "-q/--quiet, -v/--verbose and --log-format text|json work anywhere on the line.\n\n"
        "Example: dcurate run configs/demo.yaml --workers 2"
    ),
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
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
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail to stderr (anywhere on the line)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors: no progress, no summary."),
    log_format: str = typer.Option("text", "--log-format", help="text, or json: one JSON object per log line."),
) -> None:
    """Logging is set up by _Group.main, which takes these flags out of the line wherever they are."""


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
    types = core_params.field_types(cls)
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
    """The CLI values for ``cls``'s fields that the user gave (flags left at their default are
    not passed on, so that ``only_for`` checks see only what was asked for)."""
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click.core import ParameterSource  # type: ignore[assignment,no-redef]
        from click.globals import get_current_context  # type: ignore[assignment,no-redef]

    names = {f.name for f in dataclasses.fields(cls)}
    ctx = get_current_context(silent=True)

    def given(k: str) -> bool:
        if ctx is None:
            return True
        src = ctx.get_parameter_source(k)
        return src is None or src not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)

    return {k: v for k, v in kwargs.items() if k in names and v is not None and given(k)}


def check_output_folder(out: str, where: str) -> None:
    """OUT must be a folder (or '-'): an existing file there is a usage error, typically a glob
    that expanded into the inputs and swallowed OUT."""
    import os

    if out != "-" and os.path.lexists(out) and not os.path.isdir(out):
        raise RecipeError(
            f"{where}: the output {out} is an existing file, not a folder (the last argument is the "
            "output folder; did a glob expand to the inputs only?)"
        )


def _make_stage_command(cls: type[Stage]) -> None:
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
        stage_params = core_params.build(cls.Params, _given(kwargs, cls.Params), where)
        opts = core_params.build(RunOptions, _given(kwargs, RunOptions), where)
        from dcurate.runner.driver import run

        run(paths[:-1], paths[-1], [(cls.name, stage_params)], opts)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = cls.name.replace("-", "_")
    doc = (cls.__doc__ or cls.summary or "").strip()
    summary = cls.summary or doc.split("\n")[0]
    epilog = f"Example: {cls.example}" if cls.example else None
    app.command(name=cls.name, help=doc or summary, short_help=summary, epilog=epilog, cls=_StageCommand)(command)
    _STAGE_FIELDS[cls.name] = stage_fields


def _make_run_command() -> None:
    recipe = inspect.Parameter(
        "recipe", inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=typer.Argument(..., help="YAML recipe: input, output, options and stages."), annotation=str,
    )
    io = [
        inspect.Parameter("input", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[list[str]], default=typer.Option(
            None, "--input", "-i", help="Input path(s) instead of the recipe's (repeatable; relative to here).")),
        inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(
            None, "--output", "-o", help="Output folder instead of the recipe's (relative to here).")),
    ]
    params = [recipe] + io + option_parameters(RunOptions, none_defaults=True)

    def command(**kwargs: Any) -> None:
        from dcurate.runner.driver import run
        from dcurate.runner.recipe import load

        inputs, output = kwargs.pop("input"), kwargs.pop("output")
        r = load(kwargs.pop("recipe"), _given(kwargs, RunOptions), inputs=inputs or None, output=output)
        check_output_folder(str(r.output), "dcurate run")
        _OUTPUT[0] = str(r.output)
        run(r.inputs, r.output, r.stages, r.options)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    app.command(
        name="run",
        help="Run a YAML recipe: chained stages over sharded data, in parallel, resuming after a crash.\n\n"
        "Paths in the recipe are relative to the recipe file. Flags given here override the recipe's values.",
        short_help="Run a YAML recipe: chained stages over sharded data, in parallel, resuming after a crash.",
        epilog="Example: dcurate run configs/demo.yaml --workers 4 --dry-run",
    )(command)


@app.command("stats", epilog="Example: dcurate stats data/demo/out --by domain")
def stats_command(
    paths: list[str] = typer.Argument(..., help="Shard files, directories or globs."),
    column: str | None = typer.Option(None, "--column", help="Count the values of this column (default: domain, if present)."),
    by: str | None = typer.Option(None, "--by", help="Break documents, bytes and lengths down per value of this column (e.g. domain)."),
    top: int = typer.Option(20, "--top", min=0, help="Show only the N most frequent values of a column with more (0 = all)."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Hugging Face tokenizers JSON file: count tokens too (needs: pip install tokenizers)."),
    text_field: str = typer.Option("text", "--text-field", help="Column holding the text."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarise any shard set: documents, bytes, columns, document lengths, value counts, numeric quantiles."""
    from dcurate.report.stats import describe, format_description

    d = describe(paths, text_field=text_field, column=column, by=by, top=top, tokenizer=tokenizer)
    if as_json:
        import json

        typer.echo(json.dumps(d, indent=2, default=str))
    else:
        typer.echo(format_description(d))


@app.command("report", epilog="Example: dcurate report data/demo/out --html /tmp/report.html")
def report_command(
    out: str = typer.Argument(..., help="The OUT folder of a `dcurate run` (or stage command)."),
    html: str | None = typer.Option(None, "--html", help="Where to write the page (default OUT/.dcurate/report.html)."),
) -> None:
    """Write one self-contained HTML page about a run: funnel, removals, score histograms, duplicate
    clusters, domain mixture, example documents, the recipe and timings."""
    from dcurate.report.html import write_report

    typer.echo(str(write_report(out, html)))


def _look(paths: list[str], n: int, where: str | None, columns: str | None, text_field: str, max_chars: int,
          as_json: bool, seed: int | None) -> None:
    from dcurate.report import look

    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    if seed is None:
        docs = look.head(paths, n, where, text_field, cols)
    else:
        docs = look.sample(paths, n, seed, where, text_field, cols)
    if as_json:
        import json

        for d in docs:
            d = {k: v for k, v in d.items() if not k.startswith("__") and (cols is None or k in cols or k == text_field)}
            typer.echo(json.dumps(d, ensure_ascii=False, default=str))
    else:
        typer.echo(look.format_docs(docs, text_field, cols, max_chars))


_LOOK_HELP = dict(
    n=typer.Option(5, "-n", "--docs", min=0, help="How many documents."),
    where=typer.Option(None, "--where", help="Only documents matching this expression (the --keep-if language), "
                       "e.g. \"quality_score < 0.2 and domain == 'forum'\"."),
    columns=typer.Option(None, "--columns", help="Comma-separated columns to show (default: every column)."),
    text_field=typer.Option("text", "--text-field", help="Column holding the text."),
    max_chars=typer.Option(600, "--max-chars", min=0, help="Cut each text after this many characters (0 = whole)."),
    as_json=typer.Option(False, "--json", help="One JSON object per document instead of wrapped text."),
)


@app.command("head", epilog="Example: dcurate head data/demo/out -n 3 --where \"perplexity > 1000\"")
def head_command(
    paths: list[str] = typer.Argument(..., help="Shard files, directories or globs (an output, an input, a --rejected folder)."),
    n: int = _LOOK_HELP["n"],
    where: str | None = _LOOK_HELP["where"],
    columns: str | None = _LOOK_HELP["columns"],
    text_field: str = _LOOK_HELP["text_field"],
    max_chars: int = _LOOK_HELP["max_chars"],
    as_json: bool = _LOOK_HELP["as_json"],
) -> None:
    """Show the first documents of a shard set: text wrapped and truncated, with their columns."""
    _look(paths, n, where, columns, text_field, max_chars, as_json, None)


@app.command("sample", epilog="Example: dcurate sample data/demo/out -n 5 --seed 1")
def sample_command(
    paths: list[str] = typer.Argument(..., help="Shard files, directories or globs (an output, an input, a --rejected folder)."),
    n: int = _LOOK_HELP["n"],
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed and data => same documents)."),
    where: str | None = _LOOK_HELP["where"],
    columns: str | None = _LOOK_HELP["columns"],
    text_field: str = _LOOK_HELP["text_field"],
    max_chars: int = _LOOK_HELP["max_chars"],
    as_json: bool = _LOOK_HELP["as_json"],
) -> None:
    """Show a uniform random sample of documents (one streaming pass), in shard order."""
    _look(paths, n, where, columns, text_field, max_chars, as_json, seed)


@app.command("reshard", epilog="Example: dcurate reshard data/demo/corpus data/demo/shards --shard-size 1000 --output-format parquet")
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
    opts = core_params.build(
        RunOptions,
        {k: v for k, v in dict(shard_size=shard_size, output_format=output_format, compression_level=compression_level,
                               text_field=text_field, id_field=id_field, workers=workers, force=force).items() if v is not None},
        "dcurate reshard",
    )
    run(paths[:-1], paths[-1], [], opts)


@app.command("verify", epilog="Example: dcurate verify data/clean")
def verify_command(out: str = typer.Argument(..., help="An output folder of dcurate.")) -> None:
    """Check OUT: every shard in its manifest present with its size and checksum, row counts equal
    to the stats, no foreign or stale data files. Exit 0 when so; 1 and one line per problem
    otherwise; 2 when OUT is not a dcurate output or its manifest is unreadable."""
    from dcurate.api import verify

    problems = verify(out)
    for line in problems:
        typer.echo(line)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{out}: complete and consistent")


@app.command("clean", epilog="Example: dcurate clean data/clean")
def clean_command(out: str = typer.Argument(..., help="An output folder of dcurate.")) -> None:
    """Remove OUT's work files (markers, plans, kept intermediates) when you are done resuming or
    re-running it; the data shards and OUT/.dcurate reports stay."""
    from dcurate.api import clean

    removed = clean(out)
    typer.echo(f"{out}: removed {len(removed)} work folder(s)" + (f" under {os.path.dirname(removed[0])}" if removed else ""))
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
            if is_interrupt(e):
                fail("interrupted; re-run the same command to resume", EXIT_INTERRUPTED, prefix="dcurate: ")
            if os.environ.get("DCURATE_TRACEBACK"):
                raise
            known = explain(e, _OUTPUT[0])
            if known is None:
                msg = f"internal error: {type(e).__name__}: {e}".splitlines()[0][:500]
                fail(msg + " (a bug; DCURATE_TRACEBACK=1 shows the traceback)", EXIT_DATA)
            else:
                fail(known[0], known[1])

    return wrapper


def _short_help(info: Any) -> str | None:
    """The first paragraph of a command's help, whole (click cuts it at 45 characters or at the
    first full stop, e.g. "Cut inputs (e.g.")."""
    text = info.help or (info.callback.__doc__ if info.callback is not None else None)
    if not text:
        return None
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
#: Whether the interrupted line was printed (fail() with exit 130).
_INTERRUPT_SAID = [False]


def fail(message: str, code: int, prefix: str = "dcurate: error: ") -> None:
    """Print one line to stderr and exit with ``code``."""
    line = " ".join(str(message).split("\n")).strip()
    _INTERRUPT_SAID[0] = _INTERRUPT_SAID[0] or code == EXIT_INTERRUPTED
    try:
        typer.echo(prefix + line, err=True)
    except (OSError, ValueError):
        pass
    raise typer.Exit(code)


#: Command callbacks already wrapped by _friendly (the app is built once per process).
_FRIENDLY: set[Any] = set()


def _build_app() -> None:
    import dcurate.cli

    only = dcurate.cli.ONLY_STAGE  # the console entry runs this stage's command: import no other
    mods = [importlib.import_module(f"dcurate.stages.{only}.stage")] if only else load_stage_modules()
    first = list(app.registered_commands)  # look/stats/reshard, defined above
    app.registered_commands.clear()
    _make_run_command()
    for cls in [get_stage(only)] if only else sorted(registry().values(), key=lambda c: c.name):
        _make_stage_command(cls)
    app.registered_commands.extend(first)
    for m in mods:
        hook = getattr(m, "register_cli", None)
        if hook is not None:
            hook(app)
    for info in app.registered_commands:
        if info.short_help is None:
            info.short_help = _short_help(info)
        if info.callback is not None and info.callback not in _FRIENDLY:
            info.callback = _friendly(info.callback)
            _FRIENDLY.add(info.callback)


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
