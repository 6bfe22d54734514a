"""The `loopviz` command: show a loop, trace a fit, report on and diff saved traces.

Exit codes: 0 success, 1 failure (bad target, unreadable trace, missing `dot`, a target that exits...),
2 usage error, 130 interrupted (Ctrl-C). Errors are one line on stderr; `--debug` (before or after the
command's name) shows the traceback instead. TARGET modules are imported with the current directory on
`sys.path`, as `python -m` does. Formats come from
`loopviz.formats`, clocks from `loopviz.trace.clock.CLOCKS`, targets from `loopviz.adapters.ADAPTERS`;
`--help`, `report` and `diff` import neither fastai nor torch.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

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


STDOUT = "-"  # `-o -`: write to standard output, as no -o does
DATA_VIEWS = frozenset({"csv", "chrome", "plot"})  # report views that are data for programs, not text for people


def _stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (not a pipe or a file): progress bars and escaped data only then."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced by something without isatty, or closed
        return False


def _file(output: str | None) -> str | None:
    """The file `-o` names: None for standard output (no -o, or `-o -`)."""
    return None if output == STDOUT else output


def _check_printable(fmt: Format, output: str | None, stem: str) -> None:
    """A usage error, before any work is done, for bytes that would go to the terminal."""
    if _file(output) is None and fmt.binary and (output is None or _stdout_is_terminal()):
        raise click.UsageError(f"--format {fmt.name} writes a file: give -o {stem}{fmt.extensions[0]} "
                               "(or -o - with standard output redirected).")


def _as_file(out: str | bytes) -> bytes:
    """The bytes `_write` puts in a file for `out`."""
    if isinstance(out, bytes):
        return out
    return (out if out.endswith("\n") else out + "\n").encode("utf-8", errors="backslashreplace")


def _write(fmt: Format, out: str | bytes, output: str | None) -> None:
    """Print a text output, or write any output to a file and say so.

    Standard output (no -o, or `-o -`): text views are printed with control characters escaped, always. Data (a
    CSV, a Chrome JSON, an SVG, bytes) piped or redirected is exactly the bytes `-o FILE` writes; on a terminal it
    is shown escaped like text (names from the traced code can hold escape sequences a terminal would obey)."""
    if _file(output) is None:
        if isinstance(out, bytes) or (fmt.view in DATA_VIEWS and not _stdout_is_terminal()):
            stream = click.get_binary_stream("stdout")
            stream.write(_as_file(out))
            stream.flush()
        else:  # names in the output (a CSV's) reach the terminal: control characters escaped
            click.echo(visible(out.rstrip("\n")))
        return
    from loopviz.trace.files import write_bytes

    path = write_bytes(_as_file(out), output)  # type: ignore[arg-type]
    click.echo(f"wrote {path}")


def _top_options(default: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--top N` and `--all`: how many rows each table shows."""
    def add(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option("--all", "all_rows", is_flag=True, help="Show every row of every table (overrides --top).")(command)
        return click.option("--top", type=click.IntRange(min=1), default=default, show_default=True, metavar="N",
                            help="Rows per table; a cut table says how many rows it left out.")(command)
    return add


MORE = "--top N shows more, --all shows every row"


def _report_findings(trace_files: tuple[str, ...], fmt: str | None, output: str | None) -> None:
    """`report --findings`: the diagnosis of one trace file, as text, or as JSON where -o names a .json file."""
    from loopviz.trace.trace import Trace

    if len(trace_files) > 1:
        raise click.UsageError("--findings reads one trace file; give one (a distributed fit: one rank's file).")
    if fmt is not None:
        raise click.UsageError("--findings writes text, or JSON where -o ends in .json; leave out --format.")
    target = _file(output)
    _output_path(target)
    diagnosis = Trace.load(trace_files[0]).diagnose()
    if target is None:
        click.echo(visible(str(diagnosis)))
        return
    from loopviz.trace.files import write_bytes

    as_json = target.lower().endswith(".json")
    text = json.dumps(diagnosis.to_json(), indent=1) if as_json else str(diagnosis)
    click.echo(f"wrote {write_bytes(_as_file(text), target)}")


def report_text(subject: Any, top: int | None) -> str:
    """The report's tables as plain text, `top` rows each (None: all), a cut table naming --top / --all; a trace
    with state changes (`trace --changes`) gets a table of them, most frequent first."""
    from loopviz.trace import display
    from loopviz.trace.merge import MergedTrace

    if isinstance(subject, MergedTrace):
        return display.as_text(display.merged_tables(subject, top, MORE))
    return display.as_text(display.trace_tables(subject, top, callbacks=top, more=MORE, changes=True,
                                                findings="loopviz report --findings"))


def _min_change(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """`--min-change` values checked now (a usage error), the default when none is given."""
    from loopviz.diff import DEFAULT_MIN_CHANGE, parse_min_change

    for one in value:
        try:
            parse_min_change(one)
        except Exception as e:
            raise click.BadParameter(f"{one!r} is not a change; give a percentage (5%) or a time (0.5ms, 200us, 1s, "
                                     "or a number of ms).", ctx, param) from e
    return value or (DEFAULT_MIN_CHANGE,)


def _percentage(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """`--fail-on-regression`'s PCT as a number of percent (5 or '5%'), checked now (a usage error)."""
    if value is None:
        return None
    try:
        pct = float(value.strip().removesuffix("%"))
    except ValueError:
        pct = float("nan")
    if not 0 <= pct < float("inf"):
        raise click.BadParameter(f"{value!r} is not a percentage; give a number of percent at least 0, such as 5 "
                                 "or 5%.", ctx, param)
    return pct


def _gate(d: Any, pct: float) -> None:
    """Fail (exit 1) naming the regressions of at least `pct` percent beyond the noise; say so when there are none."""
    found = d.regressions(pct)
    if not len(found):
        click.echo(f"no regression of {pct:g}% or more beyond the noise")
        return
    named = "; ".join(f"{row.row} {row.change_pct:+,.1f}%" + (f" (p={row.p:.2g})" if row.p == row.p else "")
                      + (f" ({row.note})" if row.note else "") for row in found.itertuples())
    raise Failure(f"{len(found)} regression(s) of {pct:g}% or more beyond the noise: {named}")


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
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to this file instead of printing (-o -: standard output).")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Preview a callback (repeatable), e.g. GradientClip.")
@click.option("--loop", default=None, help="Which loop (default: the target's first). fastai: fit, fit_one_cycle, "
              "fine_tune, validate, get_preds, lr_find; Hugging Face Trainer: train, evaluate, predict; Lightning: "
              "fit, validate, test, predict.")
@click.option("--start-epoch", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="As fit(n_epoch, start_epoch=N) (fit loops, fastai): preview the SkipToEpoch fastai adds.")
@click.option("--hide-empty", is_flag=True, help="Leave out events where no callback runs.")
@click.option("--focus", metavar="CALLBACK", help="Show only this callback (class or fastai name).")
@_debug_option
@click.pass_context
def show(ctx: click.Context, target: str | None, verbose: bool, fmt: str | None, output: str | None,
         cbs: tuple[str, ...], loop: str | None, start_epoch: int, hide_empty: bool, focus: str | None) -> None:
    """Show the loop of TARGET (module:attr, a .py file defining `learn`, or a built-in synthetic learner)."""

    def run() -> None:
        chosen = choose(formats.LOOP_FORMATS, fmt, _file(output))  # read now: a row added to the table counts
        _check_printable(chosen, output, "loop")
        _output_path(_file(output))
        obj, adapter = load_target(target)
        loops = list(adapter.load().LOOPS)
        if loop is not None and loop not in loops:  # a usage error (exit 2), as click's own are
            raise click.UsageError(f"--loop {loop!r}: {adapter.describes} runs these loops: {', '.join(loops)}.")
        which = loop or loops[0]
        if start_epoch and adapter.name != "fastai":
            raise click.UsageError(f"--start-epoch is an option of fastai's fit; a "
                                   f"{adapter.describes.removeprefix('a ')} has no such option: leave it out.")
        if start_epoch:  # fastai's own option of fit: its spec builder previews it (and checks the loop takes it)
            from loopviz.adapters.fastai.spec import build_spec

            spec = build_spec(obj, loop=which, cbs=_callbacks(adapter, cbs), start_epoch=start_epoch)
        else:
            spec = adapter.load().loop_spec(obj, which, _callbacks(adapter, cbs))
        from loopviz.processors import narrow

        spec = narrow(spec, hide_empty, focus)
        if chosen.view == "rich" and _file(output) is None:
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
@click.option("--waits", is_flag=True, help="Also find the callbacks and work that make the host wait for the GPU "
                                            "(.item(), .cpu()...) and how long; needs CUDA.")
@click.option("--data", is_flag=True, help="Also time the data loop inside draw: each stage and transform of every "
                                           "batch, in the loader's worker processes too (fastai).")
@click.option("--live", is_flag=True, help="Also show, while it fits, the split of the recent steps and the top "
                                           "finding so far (at most once a second), on the progress bar or on "
                                           "standard error.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the trace here (.json or .json.gz).")
@click.option("--cbs", multiple=True, metavar="MODULE:CLASS", help="Fit with this callback too (repeatable).")
@_top_options(25)
@_debug_option
@click.pass_context
def trace(ctx: click.Context, target: str | None, epochs: int, clock: str, changes: bool, waits: bool, data: bool,
          live: bool, output: str | None, cbs: tuple[str, ...], top: int, all_rows: bool) -> None:
    """Fit TARGET under a trace, print where the time went (and, with --changes, which state each callback
    changed), write the trace. fastai's progress bar is shown only when standard output is a terminal: piped or
    redirected, the fit runs without ProgressCallback, so the output has no carriage returns (and the trace no
    ProgressCallback)."""

    def run() -> None:
        from contextlib import nullcontext

        _output_path(output)  # before the fit, not after it
        obj, adapter = load_target(target)
        if data and adapter.name != "fastai":
            raise click.UsageError(f"--data times the data loop of fastai loaders; {target!r} is a {adapter.name} "
                                   "target: trace it without --data.")
        module = adapter.load()
        callbacks = _callbacks(adapter, cbs)
        quiet = adapter.name == "fastai" and not _stdout_is_terminal()
        # outside the trace: the trace is of the fit that ran
        with obj.no_bar() if quiet else nullcontext(), _epoch_lines(obj) if quiet else nullcontext():
            flags = {name: True for name, on in (("data", data), ("live", live)) if on}
            with module.trace(obj, clock=clock, changes=changes, waits=waits, **flags) as t:
                module.fit(obj, epochs, callbacks)
        click.echo(report_text(t, None if all_rows else top))
        if output:
            click.echo(f"wrote {t.save(output)}")

    _guard(ctx.obj["debug"], run)


@contextlib.contextmanager
def _epoch_lines(learn: Any) -> Iterator[None]:
    """Without its progress bar fastai's Recorder prints each epoch as a raw list (`[0, 11.8, 12.1, '00:00']`) among
    the report: each epoch as one named line on standard error instead ('epoch 0  train_loss 11.81 ...')."""
    kept = learn.logger

    def log(values: Any) -> None:
        names = list(getattr(learn.recorder, "metric_names", [])) or [f"value {i}" for i in range(len(values))]
        shown = [f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                 for name, value in zip(names, values)]
        click.echo("  ".join(shown), err=True)

    learn.logger = log
    try:
        yield
    finally:
        learn.logger = kept


@cli.command()
@click.argument("trace_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "-f", "fmt", type=click.Choice(names(REPORT_FORMATS)), default=None,
              help=f"The report (default: from -o's ending, else table). -o endings: {known_endings(REPORT_FORMATS, ' ')}.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the report here (-o -, or no -o: standard output).")
@click.option("--findings", is_flag=True, help="Only what slows the run: each finding with its evidence, the culprit "
              "and the fix (-o FILE.json: as JSON).")
@_top_options(25)
@_debug_option
@click.pass_context
def report(ctx: click.Context, trace_files: tuple[str, ...], fmt: str | None, output: str | None, findings: bool,
           top: int, all_rows: bool) -> None:
    """Report on a saved trace: what slows it and its tables (with its state changes, if recorded), a CSV of every
    span, a Chrome/Perfetto trace, or plots. Several files (one per rank of a distributed fit, e.g.
    trace.rank*.json) are merged into one report. CSV, Chrome JSON and SVG piped or redirected from standard output
    are the exact bytes -o FILE writes; on a terminal, control characters in them are shown escaped."""

    def run() -> None:
        from loopviz.trace.trace import Trace

        if findings:
            _report_findings(trace_files, fmt, output)
            return

        chosen = choose(formats.REPORT_FORMATS, fmt, _file(output))
        _check_printable(chosen, output, "report")
        _output_path(_file(output))
        if len(trace_files) > 1:
            if not chosen.merged:
                merged = ", ".join(f.name for f in REPORT_FORMATS if f.merged)
                raise click.UsageError(f"several trace files merge into one of: {merged}; not {chosen.name}.")
            from loopviz.trace.merge import merge

            subject: Any = merge(trace_files)
        else:
            subject = Trace.load(trace_files[0])
        text = report_text(subject, None if all_rows else top) if chosen.view == "table" else renderer(chosen)(subject)
        _write(chosen, text, output)

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("before", type=click.Path(dir_okay=False))
@click.argument("after", type=click.Path(dir_okay=False))
@click.option("--min-change", multiple=True, metavar="CHANGE", callback=_min_change,
              help="The minimum change for a verdict (a smaller one is listed, with none), per occurrence: '5%' "
                   "(of the mean time before), '0.5ms', '200us', '1s' or a number of ms; given twice ('5%' and "
                   "'0.5ms'), a change must pass both; 0: any change beyond the noise.  [default: 5%, or "
                   "--fail-on-regression's PCT]")
@click.option("--fail-on-regression", "fail_pct", metavar="PCT", callback=_percentage,
              help="Exit 1 when the run or any row regresses by at least PCT percent (5 or 5%) beyond the noise, "
                   "naming them; 0 when none does: a step-time gate for CI.")
@_top_options(15)
@_debug_option
@click.pass_context
def diff(ctx: click.Context, before: str, after: str, min_change: tuple[str, ...], fail_pct: float | None, top: int,
         all_rows: bool) -> None:
    """Compare two saved traces: per event and per callback, time before and after, the biggest change first, with
    totals (the run, events and work, callbacks) and a verdict where a change passes --min-change and the noise."""

    def run() -> None:
        from loopviz.diff import TraceDiff
        from loopviz.errors import LoopvizError
        from loopviz.trace.trace import Trace

        loaded = []
        for role, path in (("BEFORE", before), ("AFTER", after)):
            try:
                loaded.append(Trace.load(path))
            except LoopvizError as e:
                raise Failure(f"{role if path in str(e) else f'{role} ({path})'}: {e}") from e
        labels = (f"BEFORE ({before})", f"AFTER ({after})")
        given = ctx.get_parameter_source("min_change") is not click.core.ParameterSource.DEFAULT
        threshold = list(min_change) if given or fail_pct is None else [f"{fail_pct:g}%"]
        d = TraceDiff(*loaded, min_change=threshold or None, labels=labels)
        click.echo(d.text(None if all_rows else top, more=MORE))
        if fail_pct is not None:
            _gate(d, fail_pct)

    _guard(ctx.obj["debug"], run)


@cli.command()
@click.argument("trace_file", metavar="TRACE", type=click.Path(dir_okay=False))
@click.argument("profiler_file", metavar="PROFILER_JSON", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the merged Chrome/Perfetto trace here (.json, or .json.gz compressed; -o -: standard output).")
@_debug_option
@click.pass_context
def merge(ctx: click.Context, trace_file: str, profiler_file: str, output: str) -> None:
    """Merge a saved trace (TRACE: `loopviz trace -o` or Trace.save) with a torch.profiler trace of the same fit
    (PROFILER_JSON: what prof.export_chrome_trace wrote) into one Perfetto file: loopviz's loop, events, callbacks
    and work above the profiler's operators and kernels, on loopviz's clock (exact when traced with ranges=True)."""

    def run() -> None:
        from loopviz.errors import LoopvizError
        from loopviz.trace.files import write_json
        from loopviz.trace.jsontext import compact_json
        from loopviz.trace.profiler import merged_with_profiler, profiler_events
        from loopviz.trace.trace import Trace

        _output_path(_file(output))
        try:
            loaded = Trace.load(trace_file)
        except LoopvizError as e:
            if "'format'" in str(e):  # the profiler's JSON, say: given first
                raise Failure(f"TRACE: {str(e).rstrip('.')}; the loopviz trace comes first, the profiler's JSON "
                              "second.") from e
            raise Failure(f"TRACE: {e}") from e
        try:
            kineto = profiler_events(profiler_file)
        except LoopvizError as e:
            raise Failure(f"PROFILER_JSON: {e}") from e
        merged = merged_with_profiler(loaded, kineto)
        info = merged["otherData"]["profiler"]
        if info["firings"]:
            first, last = info["firings"]
            covers = f"its window covers firings {first}-{last} ({last - first + 1} of {info['of_firings']})"
        else:
            covers = f"its window covers none of the trace's {info['of_firings']} firings: are they of the same fit?"
        summary = f"profiler placed by {info['placed by']}; {covers}"
        if _file(output) is None:
            chrome = next(f for f in formats.REPORT_FORMATS if f.view == "chrome")
            _write(chrome, compact_json(merged, "the merged trace"), output)
            click.echo(summary, err=True)
            return
        path = write_json(merged, output)
        click.echo(f"wrote {path}: {summary}")

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
