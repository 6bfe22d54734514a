"""Counting instructions with callgrind: the plumbing every `instructions*.py` benchmark shares.

A benchmark script runs itself again under callgrind with instrumentation off (`--instr-atstart=no`), so starting
Python and importing the frameworks cost nothing; inside, `counted(label, run)` switches instrumentation on around
one measured region and dumps its counters under `label`; outside, `run_under_callgrind` collects every dump's total
by label. Counts are deterministic to well under 1 % for whole fits; per-firing figures are differences of two large
counts (N and 2N firings), so fixed costs cancel.

Needs valgrind (Debian: apt-get install valgrind).
"""
from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["counted", "run_under_callgrind", "per_firing", "benchmark_main", "FRAMEWORK_TARGETS"]

# issue 25: the Hugging Face and Lightning tracers are held to twice the fastai tracer's targets (instructions.py's
# TARGETS): instructions added per dispatch with no, one and two handlers, and the whole fit's overhead
FRAMEWORK_TARGETS = {"bare": 16_000, "one": 24_000, "two": 32_000, "fit": 1.04}


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def counted(label: str, run: Callable[[], object], collect: bool = False) -> None:
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


def run_under_callgrind(script: str, arguments: list[str]) -> dict[str, int]:
    """Run `python script *arguments` under callgrind (instrumentation off until `counted` switches it on) and return
    the instructions of each dump by label; exits with the run's stderr when it fails."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed: apt-get install valgrind (callgrind counts the instructions)")
    with tempfile.TemporaryDirectory() as folder:
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={folder}/callgrind.out.%p", sys.executable, script, *arguments]
        # string hashing is randomised per process, which moves dict and set costs by a few per cent: fixed here
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if done.returncode != 0:
            sys.exit(f"callgrind run failed:\n{done.stderr[-3000:]}")
        return _totals(folder)


def per_firing(totals: dict[str, int], label: str, n: int) -> float:
    """Instructions per firing of the case dumped as `label-N` and `label-2N`: the difference over N."""
    return (totals[f"{label}-{2 * n}"] - totals[f"{label}-{n}"]) / n


def benchmark_main(script: str, doc: str, measure: Callable[[argparse.Namespace], None],
                   figures: Callable[[dict[str, int], int], dict[str, dict[str, float]]],
                   report: Callable[[dict[str, dict[str, float]], int, int], bool], targets: dict[str, float]) -> None:
    """The command line of a per-framework benchmark (`--n`, `--steps`, `--check`, `--json`): run `script` under
    callgrind (or, inside it, `measure`), print the figures (`report`, True when every target is met), write them,
    and exit 1 with `--check` when a target is missed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="dispatches per case (and 2N)")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the whole fit")
    parser.add_argument("--check", action="store_true", help="exit 1 when a figure is past its target")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        measure(args)
        return
    totals = run_under_callgrind(script, ["--n", str(args.n), "--steps", str(args.steps), "--inside", "1"])
    found = figures(totals, args.n)
    met = report(found, args.n, args.steps)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "steps": args.steps, "targets": targets, **found}, indent=1))
    if args.check and not met:
        sys.exit(1)
