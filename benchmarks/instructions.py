"""What tracing adds per event firing, in instructions: deterministic, unlike any timing on a shared VM.

Runs itself under callgrind with instrumentation off (`--instr-atstart=no`), so starting Python and importing
fastai cost nothing. For each case it switches instrumentation on (`callgrind_control -i on`), dispatches one
event N times through `learn(event)` (fastai's own `Learner.__call__` -> `_call_one` -> every callback), switches
it off and dumps the counters; then the same with 2N. The difference between the two removes every fixed cost
(the switching itself, entering the trace); traced minus untraced is what the tracer adds per firing, its
callback calls included. The learner has five callbacks; the cases differ in how many have a handler for the
event. A whole fit (`--fit-batches`) is counted the same way, traced and untraced. The garbage collector is off while
firings are counted (it runs at allocation thresholds, so at different points for N and 2N) and on for fits.

    .venv/bin/python benchmarks/instructions.py [--n 500] [--fit-batches 100] [--changes] [--ranges [--profiler]]

`--ranges` traces with ranges=True (a torch.profiler range per event, handler call and piece of work, opened only
while a profiler records); `--profiler` runs every case, traced and untraced, inside a CPU torch.profiler, so
the ranges are really opened and the figure is what they add to a profiled fit.

Needs valgrind (Debian: apt-get install valgrind). Counts are reproducible to well under 1 % between runs.
"""
from __future__ import annotations

import argparse
import gc
import glob
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# (label, event, how many of the five callbacks have a handler for it)
CASES = [
    ("bare event (no handler)", "after_cancel_step", 0),
    ("one handler", "after_step", 1),
    ("two handlers", "before_step", 2),
]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _counted(label: str, run, collect: bool = False) -> None:
    """Run `run()` with instrumentation on, then dump the counters under `label`. Python's cyclic garbage collector
    runs when allocations cross a threshold, at points that differ between N and 2N firings, so it is off while
    counting firings (`collect=False`) and on for whole fits."""
    gc.collect()
    if not collect:
        gc.disable()
    _control("-i", "on")
    try:
        run()
    finally:
        _control("-i", "off")
        gc.enable()
    _control(f"--dump={label}")


def measure(args: argparse.Namespace) -> None:
    """Inside callgrind: dispatch each case N and 2N times, traced and untraced, and fit once traced and untraced."""
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_learner

    import loopviz  # noqa: F401  (patches Learner.trace)

    torch.set_num_threads(1)

    class StepA(Callback):
        "Handles after_step and before_step."
        def after_step(self): pass
        def before_step(self): pass

    class StepB(Callback):
        "Handles before_step."
        def before_step(self): pass

    learn = synth_learner(n_trn=args.fit_batches, n_val=max(args.fit_batches // 10, 1), cbs=[StepA(), StepB()])
    learn.remove_cb(ProgressCallback)
    # TrainEvalCallback, Recorder, CastToTensor, StepA, StepB: a typical learner's count
    assert len(learn.cbs) == 5, [type(cb).__name__ for cb in learn.cbs]

    def profiled():
        """A CPU torch.profiler when --profiler was given, else nothing."""
        from contextlib import nullcontext

        from torch.profiler import ProfilerActivity, profile

        return profile(activities=[ProfilerActivity.CPU]) if args.profiler else nullcontext()

    def dispatch(event: str, n: int, traced: bool):
        def run():
            if traced:
                with profiled(), learn.trace(changes=args.changes, ranges=args.ranges):
                    for _ in range(n):
                        learn(event)
            else:
                with profiled():
                    for _ in range(n):
                        learn(event)
        return run

    def fit(traced: bool):
        def run():
            if traced:
                with profiled(), learn.trace(changes=args.changes, ranges=args.ranges):
                    learn.fit(1)
            else:
                with profiled():
                    learn.fit(1)
        return run

    with learn.no_logging():
        for _, event, _ in CASES:  # warm-up: every lookup cache filled, every path taken once
            dispatch(event, 50, True)(), dispatch(event, 50, False)()
        fit(True)(), fit(False)()
        for i, (_, event, _) in enumerate(CASES):
            for traced in (False, True):
                for n in (args.n, 2 * args.n):
                    _counted(f"case{i}-{'traced' if traced else 'plain'}-{n}", dispatch(event, n, traced))
        for traced in (False, True):
            _counted(f"fit-{'traced' if traced else 'plain'}", fit(traced), collect=True)


def _totals(folder: str) -> dict[str, int]:
    """Instructions of every dump in `folder`, by its label (callgrind writes 'desc: Trigger: dump LABEL')."""
    found = {}
    for path in glob.glob(os.path.join(folder, "callgrind.out*")):
        text = Path(path).read_text(errors="replace")
        label = re.search(r"^desc: Trigger: dump (\S+)$", text, re.M)
        total = re.search(r"^totals: (\d+)$", text, re.M)
        if label and total:
            found[label.group(1)] = int(total.group(1))
    return found


def report(totals: dict[str, int], n: int, fit_batches: int, options: list[str]) -> None:
    """Print instructions per firing for each case and the whole-fit ratio."""
    what = f" ({', '.join(options)})" if options else ""
    print(f"Instructions per event firing{what} (callgrind; 5 callbacks; each from N={n} and 2N firings):")
    print(f"  {'case':46s} {'untraced':>10s} {'traced':>10s} {'added':>10s} {'ratio':>7s}")
    for i, (label, event, handlers) in enumerate(CASES):
        per = {}
        for kind in ("plain", "traced"):
            per[kind] = (totals[f"case{i}-{kind}-{2 * n}"] - totals[f"case{i}-{kind}-{n}"]) / n
        added = per["traced"] - per["plain"]
        print(f"  {label + ' (' + event + ')':46s} {per['plain']:10,.0f} {per['traced']:10,.0f} {added:10,.0f} "
              f"{per['traced'] / per['plain']:7.3f}")
    plain, traced = totals["fit-plain"], totals["fit-traced"]
    print(f"Whole fit{what} ({fit_batches} training batches of 4, one torch thread): untraced {plain:,}, "
          f"traced {traced:,} instructions, traced/untraced {traced / plain:.3f}")


def main() -> None:
    """Run under callgrind (unless already inside it) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="firings per case (and 2N)")
    parser.add_argument("--fit-batches", type=int, default=100, help="training batches of the whole fit")
    parser.add_argument("--changes", action="store_true", help="trace with changes=True")
    parser.add_argument("--ranges", action="store_true", help="trace with ranges=True")
    parser.add_argument("--profiler", action="store_true", help="run every case inside a CPU torch.profiler")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args)
        return
    options = [f"--{name}" for name in ("changes", "ranges", "profiler") if getattr(args, name)]
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={folder}/callgrind.out.%p", sys.executable, __file__,
                   "--n", str(args.n), "--fit-batches", str(args.fit_batches), "--inside", "1",
                   *options]
        # string hashing is randomised per process, which moves dict and set costs by a few per cent: fixed here
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            sys.exit(f"callgrind run failed:\n{done.stderr[-3000:]}")
        report(_totals(folder), args.n, args.fit_batches, options)


if __name__ == "__main__":
    main()
