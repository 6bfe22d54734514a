"""What tracing a Hugging Face `Trainer` adds per event dispatch, in instructions (callgrind), and to a whole fit.

Runs itself under callgrind with instrumentation off until the measured region, as `instructions.py` does. Each case
dispatches one event N and 2N times through the Trainer's own path (`trainer.callback_handler.on_<event>(args,
state, control)` -> `CallbackHandler.call_event` -> `getattr(callback, event)(...)` on every callback), traced and
untraced; (2N - N) / N is the cost of one dispatch with every fixed cost removed, and traced minus untraced is what
loopviz adds, its handler calls included. The trainer has five callbacks (DefaultFlowCallback, PrinterCallback and
three of the benchmark's own); the cases differ in how many of them override the event's method. A whole
`trainer.train()` of a tiny linear model (batches of 4, one torch thread, so dispatch dominates: the worst case) is
counted traced and untraced. The garbage collector is off while dispatches are counted, on for fits.

    .venv/bin/python benchmarks/instructions_transformers.py [--n 300] [--steps 100] [--check] [--json PATH]

`--check` exits 1 when a figure is past its target (TARGETS: issue 25's, twice the fastai tracer's).
Needs valgrind (Debian: apt-get install valgrind).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from callgrind import FRAMEWORK_TARGETS as TARGETS, benchmark_main, counted, per_firing  # noqa: E402

# (key, label, event, how many of the five callbacks override its method)
CASES = [
    ("bare", "bare event (no handler)", "on_pre_optimizer_step", 0),
    ("one", "one handler", "on_optimizer_step", 1),
    ("two", "two handlers", "on_step_begin", 2),
]


def _trainer(folder: str, steps: int):
    """A Trainer of a tiny linear model on `steps` batches of 4, CPU, nothing logged, saved or printed."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Tiny(torch.nn.Module):
        """A linear regression that returns its loss as a Hugging Face model does."""

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            out = self.lin(x).squeeze(-1)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    class Data(torch.utils.data.Dataset):
        """`n` random (x, y) examples."""

        def __init__(self, n: int):
            gen = torch.Generator().manual_seed(0)
            self.x, self.y = torch.randn(n, 4, generator=gen), torch.randn(n, generator=gen)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.y[i]}

    class StepA(TrainerCallback):
        """Handles on_optimizer_step and on_step_begin."""

        def on_optimizer_step(self, args, state, control, **kwargs): pass
        def on_step_begin(self, args, state, control, **kwargs): pass

    class StepB(TrainerCallback):
        """Handles on_step_begin."""

        def on_step_begin(self, args, state, control, **kwargs): pass

    class Begin(TrainerCallback):
        """Handles on_train_begin only."""

        def on_train_begin(self, args, state, control, **kwargs): pass

    args = TrainingArguments(output_dir=folder, report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
                             per_device_train_batch_size=4, num_train_epochs=1, logging_strategy="no",
                             dataloader_num_workers=0, eval_strategy="no")
    torch.manual_seed(0)
    return Trainer(model=Tiny(), args=args, train_dataset=Data(4 * steps), callbacks=[StepA(), StepB(), Begin()])


def measure(args: argparse.Namespace) -> None:
    """Inside callgrind: dispatch each case N and 2N times, traced and untraced, and train once traced and untraced."""
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from transformers.utils import logging as hf_logging

    from loopviz.adapters import transformers as hf

    hf_logging.set_verbosity_error()
    torch.set_num_threads(1)
    folder = tempfile.mkdtemp(prefix="loopviz-bench-")
    trainer = _trainer(folder, args.steps)
    names = [type(cb).__name__ for cb in trainer.callback_handler.callbacks]
    assert len(names) == 5, names  # DefaultFlowCallback, PrinterCallback, StepA, StepB, Begin
    state, control = trainer.state, trainer.control

    def dispatch(event: str, n: int, traced: bool):
        def loop():
            on_event = getattr(trainer.callback_handler, event)  # bound inside the trace: the wrapper is in place
            for _ in range(n):
                on_event(trainer.args, state, control)

        def run():
            if traced:
                with hf.trace_trainer(trainer):
                    loop()
            else:
                loop()
        return run

    def fit(traced: bool):
        def run():
            if traced:
                with hf.trace_trainer(trainer):
                    trainer.train()
            else:
                trainer.train()
        return run

    for _, _, event, _ in CASES:  # warm-up: every lookup cache filled, every path taken once
        dispatch(event, 50, True)(), dispatch(event, 50, False)()
    fit(True)(), fit(False)()
    for key, _, event, _ in CASES:
        for traced in (False, True):
            for n in (args.n, 2 * args.n):
                counted(f"{key}-{'traced' if traced else 'plain'}-{n}", dispatch(event, n, traced))
    for traced in (False, True):
        counted(f"fit-{'traced' if traced else 'plain'}", fit(traced), collect=True)


def figures(totals: dict[str, int], n: int) -> dict[str, dict[str, float]]:
    """Per-dispatch instructions of each case (untraced, traced, added) and the whole fit's counts and ratio."""
    out: dict[str, dict[str, float]] = {}
    for key, _, _, _ in CASES:
        plain, traced = (per_firing(totals, f"{key}-{kind}", n) for kind in ("plain", "traced"))
        out[key] = {"untraced": plain, "traced": traced, "added": traced - plain}
    plain, traced = totals["fit-plain"], totals["fit-traced"]
    out["fit"] = {"untraced": plain, "traced": traced, "ratio": traced / plain}
    return out


def report(found: dict[str, dict[str, float]], n: int, steps: int) -> bool:
    """Print the figures beside the targets; True when every one is met."""
    print(f"Hugging Face Trainer: instructions per call_event (callgrind; 5 callbacks; from N={n} and 2N dispatches):")
    print(f"  {'case':44s} {'untraced':>10s} {'traced':>10s} {'added':>10s} {'target':>8s}")
    met = True
    for key, label, event, _ in CASES:
        row, ok = found[key], found[key]["added"] <= TARGETS[key]
        met &= ok
        print(f"  {label + ' (' + event + ')':44s} {row['untraced']:10,.0f} {row['traced']:10,.0f} {row['added']:10,.0f} "
              f"{TARGETS[key]:8,} {'ok' if ok else 'MISSED'}")
    fit = found["fit"]
    ok = fit["ratio"] <= TARGETS["fit"]
    print(f"Whole trainer.train() ({steps} steps of 4, one torch thread): untraced {fit['untraced']:,.0f}, traced "
          f"{fit['traced']:,.0f} instructions, traced/untraced {fit['ratio']:.3f} (target {TARGETS['fit']}) "
          f"{'ok' if ok else 'MISSED'}")
    return met and ok


if __name__ == "__main__":
    benchmark_main(__file__, __doc__, measure, figures, report, TARGETS)
