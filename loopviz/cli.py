"""The `loopviz` command: show a loop, trace a fit, report on and diff saved traces.

Exit codes: 0 success, 1 failure (bad target, unreadable trace, missing `dot`, a target that exits...),
2 usage error, 130 interrupted (Ctrl-C). Errors are one line on stderr; `--debug` (before or after the
command's name) shows the traceback instead. TARGET modules are imported with the current directory on
`sys.path`, as `python -m` does. Formats come from
`loopviz.formats`, clocks from `loopviz.trace.clock.CLOCKS`, targets from `loopviz.adapters.ADAPTERS`;
`--help`, `report` and `diff` import neither fastai nor torch.
"""
from __future__ import annotations

import importlib
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from loopviz.adapters import ADAPTERS, Adapter, adapter_for, known_loops
from loopviz.errors import FormatError
from loopviz import formats
from loopviz.formats import LOOP_FORMATS, REPORT_FORMATS, Format, choose, known_endings, names, renderer
from loopviz.renderers.sanitise import one_line, visible
from loopviz.trace.clock import AUTO, clock_names

__all__ = ["main", "cli"]


class Failure(click.ClickException):
    """A clear, one-line failure (exit code 1)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        # a message can quote a user's exception or names: shown on one line, control characters escaped
        click.echo(f"loopviz: {one_line(self.format_message())}", err=True)


def _guard(debug: bool, run: Callable[[], None]) -> None:
    """Run a command body, turning any error into one line (or a traceback with --debug)."""
    from loopviz.errors import GraphvizNotFound, LoopvizError

    try:
        run()
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except SystemExit as e:  # the target's own code called sys.exit() while loading or fitting
        if debug:
            traceback.print_exc()
        raise Failure(f"the target exited (sys.exit({e.code!r})) before loopviz could finish; nothing was "
                      "shown or written.") from e
    except FormatError as e:
        raise click.UsageError(str(e)) from e
    except (LoopvizError, GraphvizNotFound) as e:
        if debug:
            traceback.print_exc()
        raise Failure(str(e)) from e
    except Exception as e:  # a user's learner or callback can raise anything: one line, unless --debug
        if debug:
            traceback.print_exc()
        raise Failure(f"{type(e).__name__}: {e}") from e


def load_target(target: str | None) -> tuple[Any, Adapter]:
    """The object to show or trace, and its adapter, from TARGET: `module:attr` (an object, or a zero-argument
    function returning one), a .py file defining `learn`, or nothing (the first adapter's built-in default)."""
    if not target:
        adapter = ADAPTERS[0]
        return adapter.load().default_target(), adapter
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise Failure(f"no such file: {target}")
        _importable(str(path.resolve().parent))  # as `python file.py` does: the file's folder comes first
        namespace = runpy.run_path(str(path))
        if "learn" not in namespace:
            raise Failure(f"{target} defines no variable named `learn`; define one (learn = Learner(...)).")
        obj = namespace["learn"]
    else:
        module_name, _, attr = target.partition(":")
        if not attr:
            raise Failure(f"TARGET {target!r} must be module:attr (e.g. mypkg.train:learn) or a .py file.")
        _importable(os.getcwd())  # as `python -m` does: the current directory comes first
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise Failure(f"cannot import module {module_name!r}: {e}") from e
        if not hasattr(module, attr):
            raise Failure(f"module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(module, attr)
        if callable(obj) and adapter_for(obj) is None and not isinstance(obj, type):
            obj = obj()
    adapter = adapter_for(obj)
    if adapter is None:
        raise Failure(f"{target} is a {type(obj).__name__}, not {known_loops()}.")
    return obj, adapter


def _importable(folder: str) -> None:
    """Put `folder` first on `sys.path` (once), so a TARGET's modules import as they would when run directly."""
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _output_path(output: str | None) -> None:
    """A clear failure (through `_guard`), before any work is done, for an output file that cannot be written."""
    if output is not None:
        from loopviz.checks import check_output_path

        check_output_path("--output", output)


def _callbacks(adapter: Adapter, names_given: tuple[str, ...]) -> list[Any]:
    """Callback instances for `--cbs`, as the target's adapter reads their names."""
    module = adapter.load()
    return [module.callback(name) for name in names_given]


def _check_printable(fmt: Format, output: str | None, stem: str) -> None:
    """A usage error, before any work is done, for bytes that would go to the terminal."""
    if output is None and fmt.binary:
        raise click.UsageError(f"--format {fmt.name} writes a file: give -o {stem}{fmt.extensions[0]}.")


def _write(fmt: Format, out: str | bytes, output: str | None) -> None:
    """Print a text output, or write any output to a file and say so."""
    if output is None:  # names in the output (a CSV's) reach the terminal: control characters escaped
        click.echo(visible(out.rstrip("\n")) if isinstance(out, str) else out)
        return
    path = Path(output)
    try:
        if isinstance(out, bytes):
            path.write_bytes(out)
        else:
            path.write_text(out if out.endswith("\n") else out + "\n", encoding="utf-8", errors="backslashreplace")
    except OSError as e:
        raise Failure(f"cannot write {output!r}: {e.strerror or e}.") from e
    click.echo(f"wrote {path}")


def _debug_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--debug` on a command as on the group, so it works before or after the command's name."""
    def turn_on(ctx: click.Context, _: Any, value: bool) -> None:
        if value:
            ctx.ensure_object(dict)["debug"] = True

    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=turn_on,
                        help="Show tracebacks instead of one-line errors.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="loopviz")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """See what a training loop does: its events, the callbacks run at each, and where the time goes."""
    ctx.ensure_object(dict)["debug"] = debug


@cli.command()
@click.argument("target", required=False)
@click.option("--verbose", "-v", is_flag=True, help="Add event descriptions, work between events and callback docs.")
@click.option("--format", "-f", "fmt", type=click.Choice(names(LOOP_FORMATS)), default=None,
              help=f"The view (default: from -o's ending, else text). -o endings: {known_endings(LOOP_FORMATS, ' ')}.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of printing.")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Preview a callback (repeatable), e.g. GradientClip.")
@click.option("--loop", default="fit", show_default=True,
              help="fit, fit_one_cycle, fine_tune, validate, get_preds or lr_find.")
@click.option("--hide-empty", is_flag=True, help="Leave out events where no callback runs.")
@click.option("--focus", metavar="CALLBACK", help="Show only this callback (class or fastai name).")
@_debug_option
@click.pass_context
def show(ctx: click.Context, target: str | None, verbose: bool, fmt: str | None, output: str | None,
         cbs: tuple[str, ...], loop: str, hide_empty: bool, focus: str | None) -> None:
    """Show the loop of TARGET (module:attr, a .py file defining `learn`, or a built-in synthetic learner)."""

    def run() -> None:
        chosen = choose(formats.LOOP_FORMATS, fmt, output)  # read now: a row added to the table counts
        _check_printable(chosen, output, "loop")
        _output_path(output)
        obj, adapter = load_target(target)
        spec = adapter.load().loop_spec(obj, loop, _callbacks(adapter, cbs))
        from loopviz.processors import narrow

        spec = narrow(spec, hide_empty, focus)
        if chosen.view == "rich" and output is None:
            from rich.console import Console

            from loopviz.renderers.rich_tree import RichLoop

            Console().print(RichLoop(spec, verbose=verbose))
            return
        _write(chosen, renderer(chosen)(spec, verbose=verbose), output)

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("target", required=False)
@click.option("--epochs", "-e", type=click.IntRange(min=1), default=1, show_default=True, help="Epochs to fit.")
@click.option("--clock", type=click.Choice(clock_names()), default=AUTO, show_default=True)
@click.option("--changes", is_flag=True, help="Also record which learner state each callback changes.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the trace here (.json or .json.gz).")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Fit with this callback too (repeatable).")
@_debug_option
@click.pass_context
def trace(ctx: click.Context, target: str | None, epochs: int, clock: str, changes: bool, output: str | None,
          cbs: tuple[str, ...]) -> None:
    """Fit TARGET under a trace (with fastai's progress bar), print where the time went, write the trace."""

    def run() -> None:
        _output_path(output)  # before the fit, not after it
        obj, adapter = load_target(target)
        module = adapter.load()
        callbacks = _callbacks(adapter, cbs)
        with module.trace(obj, clock=clock, changes=changes) as t:
            module.fit(obj, epochs, callbacks)
        click.echo(str(t))
        if output:
            click.echo(f"wrote {t.save(output)}")

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("trace_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "-f", "fmt", type=click.Choice(names(REPORT_FORMATS)), default=None,
              help=f"The report (default: from -o's ending, else table). -o endings: {known_endings(REPORT_FORMATS, ' ')}.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report here.")
@_debug_option
@click.pass_context
def report(ctx: click.Context, trace_files: tuple[str, ...], fmt: str | None, output: str | None) -> None:
    """Report on a saved trace: its tables, a CSV of every span, a Chrome/Perfetto trace, or plots.
    Several files (one per rank of a distributed fit, e.g. trace.rank*.json) are merged into one report."""

    def run() -> None:
        from loopviz.trace.trace import Trace

        chosen = choose(formats.REPORT_FORMATS, fmt, output)
        _check_printable(chosen, output, "report")
        _output_path(output)
        if len(trace_files) > 1:
            if not chosen.merged:
                merged = ", ".join(f.name for f in REPORT_FORMATS if f.merged)
                raise click.UsageError(f"several trace files merge into one of: {merged}; not {chosen.name}.")
            from loopviz.trace.merge import merge

            subject: Any = merge(trace_files)
        else:
            subject = Trace.load(trace_files[0])
        _write(chosen, renderer(chosen)(subject), output)

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@_debug_option
@click.pass_context
def diff(ctx: click.Context, before: str, after: str) -> None:
    """Compare two saved traces: per event and per callback, time before and after, regressions first."""

    def run() -> None:
        from loopviz.diff import diff_traces
        from loopviz.trace.trace import Trace

        click.echo(str(diff_traces(Trace.load(before), Trace.load(after))))

    _guard(ctx.obj["debug"], run)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    try:
        cli.main(args=argv, prog_name="loopviz", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:  # click's form of Ctrl-C; a traced fit has already put fastai back on its way out
        click.echo("loopviz: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
