"""What tracing adds per event firing, in instructions: deterministic, unlike any timing on a shared VM.

Runs itself under callgrind with instrumentation off (`--instr-atstart=no`), so starting Python and importing
fastai cost nothing. For each case it switches instrumentation on (`callgrind_control -i on`), dispatches one
event N times through `learn(event)` (fastai's own `Learner.__call__` -> `_call_one` -> every callback), switches
it off and dumps the counters; then the same with 2N. The difference between the two removes every fixed cost
(the switching itself, entering the trace); traced minus untraced is what the tracer adds per firing, its
callback calls included. The learner has five callbacks; the cases differ in how many have a handler for the
event. Each round counts every case and configuration once, N then 2N; the figures are the median over `--rounds`
rounds, and the spread is the largest minus the smallest. Rounds are needed because a count of traced (or
record_function) firings moves by thousands of instructions per firing between identical rounds, mostly in
CPython's method cache missing (`find_name_in_mro` walking MROs, with its dict lookups): the cache is keyed by
type version tags, which a class gets anew whenever it is patched, so which lookups collide differs between
rounds. The garbage collector is off while firings are counted. A whole fit (`--fit-batches`) is counted once per
configuration, with the collector on.

    .venv/bin/python benchmarks/instructions.py [--n 300] [--rounds 5] [--fit-batches 100] [--processes 1]
        [--changes] [--peers] [--check] [--json PATH] [--ranges [--profiler]]

`--changes` also counts `learn.trace(changes=True)` (the one-handler case and a whole fit). `--check` counts it too,
then exits non-zero naming every figure that misses its target in TARGETS. `--peers` counts, the same way and on the
same cases, a `torch.profiler.record_function` opened around every firing (a class-level wrapper of fastai's
`Learner._call_one`, no profiler recording) and fastxtend 0.1.7's SimpleProfiler, in a callgrind process of its own
(importing fastxtend patches fastai for every learner; `pip install --no-deps fastxtend==0.1.7`, skipped when absent).
`--json PATH` writes every figure, the targets and whether each was met. `--processes K` counts everything in K callgrind
processes (as many at once as there are cores): where CPython puts each method-cache entry depends on the process's
memory layout, so one process's whole-fit ratio is one draw (four processes of the same code gave 1.016-1.024);
per-firing figures are then taken over every round of every process, and each whole fit's ratio is the median of the
processes' ratios. `--ranges` traces with ranges=True (a
torch.profiler range per event, handler call and piece of work, opened only while a profiler records); `--profiler`
runs every configuration inside a CPU torch.profiler, so the ranges are really opened.

Needs valgrind (Debian: apt-get install valgrind). Whole-fit counts repeat to ±0.001 between runs; see RESULTS.md
for how steady the per-firing medians are.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

sys.path.insert(0, str(Path(__file__).parent))
from callgrind import counted, per_firing, run_under_callgrind  # noqa: E402

# what `--check` holds the default trace to: per-firing figures are instructions added, fits traced/untraced
TARGETS: dict[str, float] = {
    "added per firing, bare event": 8_000,
    "added per firing, one handler": 12_000,
    "added per firing, two handlers": 16_000,
    "whole fit traced/untraced": 1.02,
    "whole fit changes=True/untraced": 1.05,
}

# (label, event, how many of the five callbacks have a handler for it)
CASES = [
    ("bare event", "after_cancel_step", 0),
    ("one handler", "after_step", 1),
    ("two handlers", "before_step", 2),
]
ONE_HANDLER = 1  # the case `changes=True` is counted on
ORDER = ["plain", "traced", "changes", "record_function", "fastxtend"]  # configurations, as printed

FASTXTEND = "fastxtend 0.1.7 SimpleProfiler"
INSTALL_FASTXTEND = ".venv/bin/pip install --no-deps fastxtend==0.1.7"


def make_learner(fit_batches: int):
    """synth_learner with five callbacks (TrainEvalCallback, Recorder, CastToTensor and two with step handlers)."""
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_learner

    class StepA(Callback):
        "Handles after_step and before_step."
        def after_step(self): pass
        def before_step(self): pass

    class StepB(Callback):
        "Handles before_step."
        def before_step(self): pass

    learn = synth_learner(n_trn=fit_batches, n_val=max(fit_batches // 10, 1), cbs=[StepA(), StepB()])
    learn.remove_cb(ProgressCallback)
    # fastxtend's import adds LogDispatch to every new learner: it has no handler for the cases' events
    names = [type(cb).__name__ for cb in learn.cbs if type(cb).__name__ != "LogDispatch"]
    assert len(names) == 5, names
    return learn


@contextmanager
def record_function_per_firing() -> Iterator[None]:
    """A torch.profiler.record_function range around every event firing: a class-level wrapper of Learner._call_one."""
    from fastai.learner import Learner
    from torch.profiler import record_function

    original = Learner._call_one

    def _call_one(self, event_name):
        with record_function(f"fastai/{event_name}"):
            return original(self, event_name)

    Learner._call_one = _call_one
    try:
        yield
    finally:
        Learner._call_one = original


@contextmanager
def fastxtend_profiler(learn) -> Iterator[None]:
    """fastxtend's SimpleProfiler on `learn` (its two callbacks, primed as a fit's before_fit would), removed after."""
    from fastxtend.callback.profiler import ProfileMode, SimpleProfilerCallback, SimpleProfilerPostCallback

    learn.profile(mode=ProfileMode.Simple, show_report=False)
    profiler, post = learn.simple_profiler, learn.simple_profiler_post
    profiler.before_fit(), post.before_fit(), profiler.before_backward(), profiler.before_step()
    try:
        yield
    finally:  # a fit removes them itself in after_fit; dispatching events alone does not
        learn.remove_cbs([SimpleProfilerCallback, SimpleProfilerPostCallback])


def configurations(learn, args: argparse.Namespace) -> dict[str, Callable[[], ContextManager]]:
    """What each configuration counted in this process wraps around the firings and the fit."""
    if args.inside == "fastxtend":
        return {"plain": nullcontext, "fastxtend": lambda: fastxtend_profiler(learn)}
    found: dict[str, Callable[[], ContextManager]] = {
        "plain": nullcontext, "traced": lambda: learn.trace(ranges=args.ranges)}
    if args.changes or args.check:
        found["changes"] = lambda: learn.trace(changes=True, ranges=args.ranges)
    if args.peers:
        found["record_function"] = record_function_per_firing
    return found


def cases_of(configuration: str) -> list[int]:
    """The cases a configuration is counted on: `changes=True` only on the one-handler case."""
    return [ONE_HANDLER] if configuration == "changes" else list(range(len(CASES)))


def profiled(args: argparse.Namespace) -> ContextManager:
    """A CPU torch.profiler when --profiler was given, else nothing."""
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU]) if args.profiler else nullcontext()


def firings(learn, event: str, n: int, context: Callable[[], ContextManager], args: argparse.Namespace):
    """A run that dispatches `event` n times inside `context`."""
    def run() -> None:
        with profiled(args), context():
            for _ in range(n):
                learn(event)
    return run


def fit(learn, context: Callable[[], ContextManager], args: argparse.Namespace):
    """A run of one epoch's fit inside `context`."""
    def run() -> None:
        with profiled(args), context():
            learn.fit(1)
    return run


def measure(args: argparse.Namespace) -> None:
    """Inside callgrind: each round dispatches each case N and 2N times per configuration; then one fit of each."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    if args.inside == "fastxtend":
        from fastxtend.callback import profiler  # noqa: F401  (patches fastai; before the learner, as it requires)
    else:
        import loopviz  # noqa: F401  (patches Learner.trace)
    torch.set_num_threads(1)
    learn = make_learner(args.fit_batches)
    contexts = configurations(learn, args)
    with learn.no_logging():
        for name, context in contexts.items():  # warm-up: every lookup cache filled, every path taken once
            for i in cases_of(name):
                firings(learn, CASES[i][1], 50, context, args)()
            fit(learn, context, args)()
        for r in range(args.rounds):
            for name, context in contexts.items():
                for i in cases_of(name):
                    for n in (args.n, 2 * args.n):
                        counted(f"r{r}-{name}-case{i}-{n}", firings(learn, CASES[i][1], n, context, args))
        for name, context in contexts.items():
            counted(f"fit-{name}", fit(learn, context, args), collect=True)


def spread_of(values: list[float]) -> dict[str, Any]:
    """The median, the spread (largest minus smallest) and every value of one figure over the rounds."""
    return {"median": statistics.median(values), "spread": max(values) - min(values), "rounds": values}


def per_case(totals: dict[str, int], name: str, i: int, args: argparse.Namespace) -> list[float]:
    """Instructions per firing of case i under configuration `name`, one per round."""
    return [per_firing(totals, f"r{r}-{name}-case{i}", args.n) for r in range(args.rounds)]


def figures_of(totals: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure one callgrind process counted: per firing by case and configuration, and whole fits."""
    counted_here = {label.split("-")[1] for label in totals if label.startswith("r0-")}
    names = [name for name in ORDER if name in counted_here]
    cases: dict[str, Any] = {}
    for i, (label, event, handlers) in enumerate(CASES):
        plain = per_case(totals, "plain", i, args)
        case: dict[str, Any] = {"event": event, "handlers": handlers, "plain": spread_of(plain)}
        for name in names:
            if name != "plain" and i in cases_of(name):
                own = per_case(totals, name, i, args)
                case[name] = spread_of(own)
                case[name]["added"] = spread_of([a - b for a, b in zip(own, plain)])
        cases[label] = case
    fits: dict[str, Any] = {"plain": {"instructions": totals["fit-plain"]}}
    for name in names[1:]:
        fits[name] = {"instructions": totals[f"fit-{name}"], "ratio": totals[f"fit-{name}"] / totals["fit-plain"]}
    return {"cases": cases, "fits": fits}


def checked(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its figure (None when not counted) and whether it was met."""
    cases, fits = figures["cases"], figures["fits"]
    found = {f"added per firing, {label}": cases[label]["traced"]["added"]["median"] for label, _, _ in CASES}
    found["whole fit traced/untraced"] = fits["traced"]["ratio"]
    found["whole fit changes=True/untraced"] = fits.get("changes", {}).get("ratio")
    return [{"target": name, "limit": limit, "figure": found[name],
             "met": found[name] is not None and found[name] <= limit} for name, limit in TARGETS.items()]


def number(value: float | None) -> str:
    """A per-firing count with thousands separators, a ratio to three places, or 'not counted'."""
    if value is None:
        return "not counted"
    return f"{value:,.0f}" if value > 100 else f"{value:.3f}"


def print_cases(figures: dict[str, Any], args: argparse.Namespace, what: str) -> None:
    """Print instructions per firing of every case and configuration, with what each adds and its spread."""
    total = args.rounds * (figures.get("processes") or 1)
    where = f" in {figures['processes']} processes" if figures.get("processes") else ""
    rounds = f"median of {total} round{'s' * (total > 1)}{where}; spread = largest - smallest"
    print(f"Instructions per event firing{what} (callgrind; 5 callbacks; N={args.n} and 2N firings; {rounds}):")
    print(f"  {'case':31s} {'configuration':16s} {'per firing':>11s} {'added':>9s} {'spread':>7s} {'ratio':>6s}")
    for label, event, _ in CASES:
        case = figures["cases"][label]
        plain = case["plain"]["median"]
        print(f"  {label + ' (' + event + ')':31s} {'untraced':16s} {plain:11,.0f} {'':9s} "
              f"{case['plain']['spread']:7,.0f}")
        for name, row in case.items():
            if isinstance(row, dict) and "added" in row:
                print(f"  {'':31s} {name:16s} {row['median']:11,.0f} {row['added']['median']:9,.0f} "
                      f"{row['added']['spread']:7,.0f} {row['median'] / plain:6.3f}")


def print_fits(figures: dict[str, Any], args: argparse.Namespace, what: str) -> None:
    """Print each whole fit's instructions and its ratio to the untraced fit of the same process."""
    fits = figures["fits"]
    each = lambda fit: f" [{', '.join(f'{r:.4f}' for r in fit['ratios'])}]" if "ratios" in fit else ""  # noqa: E731
    others = "".join(f", {name} {fit['instructions']:,.0f} ({fit['ratio']:.3f}{each(fit)})"
                     for name, fit in fits.items() if name != "plain")
    median = f"; medians of {figures['processes']} processes, each one's ratio in []" if "processes" in figures else ""
    print(f"Whole fit{what} ({args.fit_batches} training batches of 4, one torch thread{median}): untraced "
          f"{fits['plain']['instructions']:,.0f}{others}")


def print_targets(targets: list[dict[str, Any]]) -> None:
    """Print every target beside its figure, ok or MISSED."""
    print("Targets:")
    for row in targets:
        print(f"  {row['target']:34s} {number(row['figure']):>11s}  at most {number(row['limit']):>6s}  "
              f"{'ok' if row['met'] else 'MISSED'}")


def inside_arguments(args: argparse.Namespace, inside: str) -> list[str]:
    """The command line of the process run under callgrind."""
    flags = [f"--{name}" for name in ("changes", "ranges", "profiler", "check", "peers") if getattr(args, name)]
    return ["--n", str(args.n), "--rounds", str(args.rounds), "--fit-batches", str(args.fit_batches),
            "--inside", inside, *flags]


def count(args: argparse.Namespace) -> dict[str, list[dict[str, int]]]:
    """Run the callgrind processes (`--processes` of loopviz's, and fastxtend's with --peers when installed), as many
    at once as there are cores; the totals of each, by configuration."""
    runs = [("loopviz", inside_arguments(args, "loopviz")) for _ in range(args.processes)]
    if args.peers and importlib.util.find_spec("fastxtend") is not None:
        runs.append(("fastxtend", inside_arguments(args, "fastxtend")))
    with ThreadPoolExecutor(min(len(runs), os.cpu_count() or 1)) as pool:
        futures = [(name, pool.submit(run_under_callgrind, __file__, arguments)) for name, arguments in runs]
        found: dict[str, list[dict[str, int]]] = {}
        for name, future in futures:
            found.setdefault(name, []).append(future.result())
        return found


def merged(each: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of several callgrind processes as one: per-firing figures over every round of every process, each
    whole fit's instructions and ratio the median over the processes (with each process's ratio)."""
    if len(each) == 1:
        return each[0]
    cases: dict[str, Any] = {}
    for label, case in each[0]["cases"].items():
        out = cases[label] = {key: value for key, value in case.items() if not isinstance(value, dict)}
        for name, row in case.items():
            if isinstance(row, dict):
                out[name] = spread_of([v for figures in each for v in figures["cases"][label][name]["rounds"]])
                if "added" in row:
                    out[name]["added"] = spread_of(
                        [v for figures in each for v in figures["cases"][label][name]["added"]["rounds"]])
    fits: dict[str, Any] = {}
    for name in each[0]["fits"]:
        fits[name] = {"instructions": statistics.median(f["fits"][name]["instructions"] for f in each)}
        if name != "plain":
            ratios = [f["fits"][name]["ratio"] for f in each]
            fits[name].update(ratio=statistics.median(ratios), ratios=ratios)
    return {"cases": cases, "fits": fits, "processes": len(each)}


def parse() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="firings per case (and 2N)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of N and 2N firings; figures are their median")
    parser.add_argument("--fit-batches", type=int, default=100, help="training batches of the whole fit")
    parser.add_argument("--changes", action="store_true", help="also count trace(changes=True)")
    parser.add_argument("--ranges", action="store_true", help="trace with ranges=True")
    parser.add_argument("--profiler", action="store_true", help="run every configuration inside a CPU torch.profiler")
    parser.add_argument("--check", action="store_true", help="exit non-zero when a figure misses its target")
    parser.add_argument("--peers", action="store_true", help="also count record_function and fastxtend")
    parser.add_argument("--processes", type=int, default=1,
                        help="callgrind processes to count in (per-firing figures over all their rounds, whole fits "
                             "the median of the processes): a process's memory layout moves its counts")
    parser.add_argument("--json", type=Path, help="write every figure, the targets and whether each was met here")
    parser.add_argument("--inside", choices=["loopviz", "fastxtend"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1 or args.fit_batches < 1 or args.processes < 1:
        parser.error("--n, --rounds, --fit-batches and --processes must be at least 1")
    if args.check and (args.ranges or args.profiler):
        parser.error("--check holds the default trace to its targets: leave out --ranges and --profiler")
    return args


def main() -> None:
    """Run under callgrind (unless already inside it), print the figures, and check or write them if asked."""
    args = parse()
    if args.inside:
        measure(args)
        return
    options = [f"--{name}" for name in ("ranges", "profiler") if getattr(args, name)]
    what = f" ({', '.join(options)})" if options else ""
    result: dict[str, Any] = {"n": args.n, "rounds": args.rounds, "fit_batches": args.fit_batches, "options": options,
                              "processes": args.processes}
    for name, each in count(args).items():
        figures = result[name] = merged([figures_of(totals, args) for totals in each])
        if name == "fastxtend":
            print(f"\n{FASTXTEND}, in a callgrind process of its own (against its own untraced figures):")
        print_cases(figures, args, what)
        print_fits(figures, args, what)
    if args.peers and "fastxtend" not in result:
        print(f"\n{FASTXTEND}: not counted (not installed; {INSTALL_FASTXTEND})")
    result["targets"] = [] if options else checked(result["loopviz"])
    if result["targets"]:
        print_targets(result["targets"])
    if args.json:
        try:
            args.json.write_text(json.dumps(result, indent=1) + "\n")
        except OSError as e:
            sys.exit(f"cannot write the figures to {args.json}: {e}")
    missed = [row for row in result["targets"] if not row["met"]]
    if args.check and missed:
        sys.exit("\nMissed: " + "; ".join(f"{row['target']} {number(row['figure'])} (at most {number(row['limit'])})"
                                         for row in missed))


if __name__ == "__main__":
    main()
