"""The `loopviz` command: show a learner's loop, trace a fit, report on and diff saved traces.

Exit codes: 0 success, 1 failure (bad target, unreadable trace, missing `dot`...), 2 usage error.
Errors are one line on stderr; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import importlib
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

__all__ = ["main", "cli"]

FORMATS = ("text", "rich", "svg", "png", "pdf", "dot", "mermaid")
REPORT_FORMATS = ("table", "csv", "chrome", "svg")


class Failure(click.ClickException):
    """A clear, one-line failure (exit code 1)."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"loopviz: {self.format_message()}", err=True)


def _guard(debug: bool, run: Callable[[], None]) -> None:
    """Run a command body, turning any error into one line (or a traceback with --debug)."""
    from loopviz.errors import GraphvizNotFound, LoopvizError

    try:
        run()
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except (LoopvizError, GraphvizNotFound) as e:
        if debug:
            traceback.print_exc()
        raise Failure(str(e)) from e
    except Exception as e:  # a user's learner or callback can raise anything: one line, unless --debug
        if debug:
            traceback.print_exc()
        raise Failure(f"{type(e).__name__}: {e}") from e


def load_learner_target(target: str | None) -> Any:
    """A Learner from TARGET: `module:attr` (a Learner or a zero-argument function returning one), a .py file
    defining `learn`, or nothing (the built-in synthetic learner)."""
    import fastai.callback.all  # noqa: F401  (as in a notebook: ProgressCallback joins the defaults)
    from fastai.learner import Learner

    import loopviz  # noqa: F401  (patches Learner)

    if not target:
        from fastai.test_utils import synth_learner

        return synth_learner()
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise Failure(f"no such file: {target}")
        namespace = runpy.run_path(str(path))
        if "learn" not in namespace:
            raise Failure(f"{target} defines no variable named `learn`; define one (learn = Learner(...)).")
        obj = namespace["learn"]
    else:
        module_name, _, attr = target.partition(":")
        if not attr:
            raise Failure(f"TARGET {target!r} must be module:attr (e.g. mypkg.train:learn) or a .py file.")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise Failure(f"cannot import module {module_name!r}: {e}") from e
        if not hasattr(module, attr):
            raise Failure(f"module {module_name!r} has no attribute {attr!r}.")
        obj = getattr(module, attr)
        if callable(obj) and not isinstance(obj, Learner):
            obj = obj()
    if not isinstance(obj, Learner):
        raise Failure(f"{target} is a {type(obj).__name__}, not a fastai Learner.")
    return obj


def _callbacks(specs: tuple[str, ...]) -> list[Any]:
    """Callback instances from `module:Class` (or a fastai callback class name)."""
    from fastai.callback.core import Callback

    out = []
    for spec in specs:
        module_name, _, name = spec.rpartition(":")
        module = importlib.import_module(module_name or "fastai.callback.all")
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            raise Failure(f"--cbs {spec}: not a fastai Callback class (use module:Class, or a fastai callback name).")
        try:
            out.append(cls())
        except TypeError as e:
            raise Failure(f"--cbs {spec}: cannot create {name}() without arguments ({e}).") from e
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="loopviz")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """See what a training loop does: its events, the callbacks run at each, and where the time goes."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("target", required=False)
@click.option("--verbose", "-v", is_flag=True, help="Add event descriptions, work between events and callback docs.")
@click.option("--format", "-f", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text/rich/mermaid print (or write with -o); svg/png/pdf/dot draw the diagram.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of printing.")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Preview a callback (repeatable), e.g. GradientClip.")
@click.option("--loop", default="fit", show_default=True,
              help="fit, fit_one_cycle, fine_tune, validate, get_preds or lr_find.")
@click.option("--hide-empty", is_flag=True, help="Leave out events where no callback runs.")
@click.option("--focus", metavar="CALLBACK", help="Show only this callback (class or fastai name).")
@click.pass_context
def show(ctx: click.Context, target: str | None, verbose: bool, fmt: str, output: str | None, cbs: tuple[str, ...],
         loop: str, hide_empty: bool, focus: str | None) -> None:
    """Show the loop of TARGET (module:attr, a .py file defining `learn`, or a built-in synthetic learner)."""

    def run() -> None:
        learn = load_learner_target(target)
        spec = learn.loop_spec(loop=loop, cbs=_callbacks(cbs))
        _emit(spec, fmt, output, verbose, hide_empty, focus)

    _guard(ctx.obj["debug"], run)


def _emit(spec: Any, fmt: str, output: str | None, verbose: bool, hide_empty: bool, focus: str | None) -> None:
    from rich.console import Console

    from loopviz import LoopDiagram, RichLoop, render_mermaid, render_text
    from loopviz.processors import narrow

    spec = narrow(spec, hide_empty, focus)
    if fmt in ("svg", "png", "pdf", "dot"):
        diagram = LoopDiagram(spec, verbose=verbose)
        if not output:
            if fmt != "dot":
                raise click.UsageError(f"--format {fmt} writes a file: give -o loop.{fmt}.")
            click.echo(diagram.source)
            return
        path = Path(output)
        if path.suffix.lower().lstrip(".") != fmt:
            path = path.with_suffix(f".{fmt}")
        click.echo(f"wrote {diagram.save(path)}")
        return
    if fmt == "rich":
        if output:
            with open(Path(output), "w", encoding="utf-8") as file:
                Console(width=120, file=file, color_system=None).print(RichLoop(spec, verbose=verbose))
            click.echo(f"wrote {output}")
        else:
            Console().print(RichLoop(spec, verbose=verbose))
        return
    text = render_mermaid(spec, verbose) if fmt == "mermaid" else render_text(spec, verbose)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


@cli.command()
@click.argument("target", required=False)
@click.option("--epochs", "-e", type=click.IntRange(min=1), default=1, show_default=True, help="Epochs to fit.")
@click.option("--clock", type=click.Choice(("auto", "host", "cuda", "sync")), default="auto", show_default=True)
@click.option("--changes", is_flag=True, help="Also record which learner state each callback changes.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the trace here (.json or .json.gz).")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Fit with this callback too (repeatable).")
@click.pass_context
def trace(ctx: click.Context, target: str | None, epochs: int, clock: str, changes: bool, output: str | None,
          cbs: tuple[str, ...]) -> None:
    """Fit TARGET under a trace (with fastai's progress bar), print where the time went, write the trace."""

    def run() -> None:
        learn = load_learner_target(target)
        with learn.trace(clock=clock, changes=changes) as t:
            learn.fit(epochs, cbs=_callbacks(cbs))
        click.echo(str(t))
        if output:
            click.echo(f"wrote {t.save(output)}")

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("trace_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "-f", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True,
              help="table prints; csv, chrome (Perfetto JSON) and svg (plots) write with -o.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report here.")
@click.pass_context
def report(ctx: click.Context, trace_files: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Report on a saved trace: its tables, a CSV of every span, a Chrome/Perfetto trace, or plots.
    Several files (one per rank of a distributed fit, e.g. trace.rank*.json) are merged into one report."""

    def run() -> None:
        from loopviz import Trace, merge

        if len(trace_files) > 1:
            merged = merge(trace_files)
            if fmt == "table":
                _write_or_echo(str(merged), output)
            elif fmt == "chrome" and output:
                click.echo(f"wrote {merged.to_chrome(output)}")
            else:
                raise click.UsageError("several trace files merge into a table, or --format chrome -o FILE.")
            return
        t = Trace.load(trace_files[0])
        if fmt == "table":
            text = str(t)
            if output:
                Path(output).write_text(text + "\n", encoding="utf-8")
                click.echo(f"wrote {output}")
            else:
                click.echo(text)
            return
        if not output:
            raise click.UsageError(f"--format {fmt} writes a file: give -o FILE.")
        if fmt == "csv":
            t.to_df().to_csv(output, index=False)
        elif fmt == "chrome":
            t.to_chrome(output)
        else:
            import matplotlib

            matplotlib.use("Agg")
            t.plot().savefig(output, format="svg")
        click.echo(f"wrote {output}")

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.pass_context
def diff(ctx: click.Context, before: str, after: str) -> None:
    """Compare two saved traces: per event and per callback, time before and after, regressions first."""

    def run() -> None:
        from loopviz import Trace, diff_traces

        click.echo(str(diff_traces(Trace.load(before), Trace.load(after))))

    _guard(ctx.obj["debug"], run)


def _write_or_echo(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
        click.echo(f"wrote {output}")
    else:
        click.echo(text)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage)."""
    try:
        cli.main(args=argv, prog_name="loopviz", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("loopviz: aborted", err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
