"""What tracing a Lightning `Trainer` adds per hook, in instructions (callgrind), and to a whole fit; Lightning's own
`SimpleProfiler` counted the same way beside it.

Runs itself under callgrind with instrumentation off until the measured region, as `instructions.py` does. A hook
firing is what Lightning's loops do for a hook both the callbacks and the module may handle:
`call._call_callback_hooks(trainer, hook, ...)` (every callback in `trainer.callbacks`), then
`call._call_lightning_module_hook(trainer, hook, ...)`. Each case makes N and 2N firings, of its hook and of a partner
hook with as many handlers in turn (a hook dispatched again at once would go on with the same firing, as Lightning's
callbacks' and module's dispatches of one hook do; in a fit the next dispatch is nearly always of another hook): on a
trainer traced by loopviz, on the same trainer untraced (both fitted once, then set to the training stage, so the
hooks fire as in a training epoch), and on a twin trainer with `profiler="simple"` (Lightning's own
profiler, which times every callback and module call, handler or not), untraced by loopviz. (2N - N) / N is the cost
of one firing with every fixed cost removed; traced (or profiled) minus untraced is what loopviz (or the profiler)
adds. Each trainer has five callbacks; the cases differ in how many override the hook (the module overrides none of
them). A whole `trainer.fit` of a tiny linear model (batches of 4, one torch thread, so dispatch dominates: the worst
case) is counted plain, traced and profiled, each on a fresh trainer. The garbage collector is off while firings are
counted, on for fits.

    .venv/bin/python benchmarks/instructions_lightning.py [--n 300] [--steps 100] [--check] [--json PATH]

`--check` exits 1 when loopviz's figure is past its target (TARGETS: issue 25's, twice the fastai tracer's).
Needs valgrind (Debian: apt-get install valgrind).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from callgrind import FRAMEWORK_TARGETS as TARGETS, benchmark_main, counted, per_firing  # noqa: E402

# (key, label, hook, how many of the five callbacks override it, its partner: a hook with as many handlers, fired after
# it each time, so that each dispatch opens a firing as in a fit; the partners are test and predict hooks, which the
# whole fit never fires)
CASES = [
    ("bare", "bare hook (no handler)", "on_train_batch_start", 0, "on_predict_batch_start"),
    ("one", "one handler", "on_before_zero_grad", 1, "on_test_batch_start"),
    ("two", "two handlers", "on_after_backward", 2, "on_test_batch_end"),
]
KINDS = ("plain", "traced", "profiled")
FACTS = "facts-firings-calls-"  # the label of an empty dump that carries the traced fit's firings and handler calls


def _parts(steps: int):
    """A fresh tiny module (a linear regression on `steps` batches of 4) and five fresh callbacks."""
    import torch
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        """A linear regression; it handles none of the benchmark's hooks."""

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):
            gen = torch.Generator().manual_seed(0)
            data = torch.utils.data.TensorDataset(torch.randn(4 * steps, 4, generator=gen), torch.randn(4 * steps, generator=gen))
            return torch.utils.data.DataLoader(data, batch_size=4)

    class StepA(pl.Callback):
        """Handles on_before_zero_grad and on_after_backward."""

        def on_before_zero_grad(self, trainer, pl_module, optimizer): pass
        def on_after_backward(self, trainer, pl_module): pass
        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0): pass
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0): pass

    class StepB(pl.Callback):
        """Handles on_after_backward."""

        def on_after_backward(self, trainer, pl_module): pass
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0): pass

    class Begin(pl.Callback):
        """Handles on_fit_start."""

        def on_fit_start(self, trainer, pl_module): pass

    class End(pl.Callback):
        """Handles on_fit_end."""

        def on_fit_end(self, trainer, pl_module): pass

    class Epoch(pl.Callback):
        """Handles on_train_epoch_end."""

        def on_train_epoch_end(self, trainer, pl_module): pass

    torch.manual_seed(0)
    return Tiny(), [StepA(), StepB(), Begin(), End(), Epoch()]


def _trainer(steps: int, profiled: bool):
    """A fresh CPU trainer of a fresh module for one epoch: nothing logged, checkpointed or shown."""
    import tempfile

    import lightning.pytorch as pl

    module, callbacks = _parts(steps)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=callbacks,
                         default_root_dir=tempfile.mkdtemp(prefix="loopviz-bench-"),
                         profiler="simple" if profiled else None)
    assert len(trainer.callbacks) == 5, trainer.callbacks
    return trainer, module


def measure(args: argparse.Namespace) -> None:
    """Inside callgrind: fire each case N and 2N times (plain, traced, profiled), and fit once each way."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch
    from lightning.pytorch.trainer import call

    from loopviz.adapters import lightning as lv

    torch.set_num_threads(1)
    from lightning.pytorch.trainer.states import RunningStage

    trainers = {}
    for kind in ("plain", "profiled"):  # each fitted once, so that its module is attached (lightning_module)
        trainer, module = _trainer(args.steps, kind == "profiled")
        trainer.fit(module)
        trainer.state.stage = RunningStage.TRAINING  # hooks fired as in a training epoch (the tracer's mode, position)
        trainers[kind] = trainer
    hook_args = {"on_train_batch_start": (None, 0), "on_before_zero_grad": (None,), "on_after_backward": (),
                 "on_predict_batch_start": (None, 0), "on_test_batch_start": (None, 0),
                 "on_test_batch_end": (None, None, 0)}

    def fire(hook: str, partner: str, n: int, kind: str):
        """`n` firings: `hook`, then `partner`, n / 2 times (a firing of a hook dispatched again at once would go on)."""
        trainer = trainers["profiled" if kind == "profiled" else "plain"]
        extra, partner_extra = hook_args[hook], hook_args[partner]

        def loop():
            callbacks, module_hook = call._call_callback_hooks, call._call_lightning_module_hook  # the traced ones
            for _ in range(n // 2):
                callbacks(trainer, hook, *extra)
                module_hook(trainer, hook, *extra)
                callbacks(trainer, partner, *partner_extra)
                module_hook(trainer, partner, *partner_extra)

        def run():
            if kind == "traced":
                with lv.trace(trainer):
                    loop()
            else:
                loop()
        return run

    traces = {}

    def fit(kind: str):
        trainer, module = _trainer(args.steps, kind == "profiled")

        def run():
            if kind == "traced":
                with lv.trace(trainer) as traces[kind]:
                    trainer.fit(module)
            else:
                trainer.fit(module)
        return run

    for _, _, hook, _, partner in CASES:  # warm-up: every lookup cache filled, every path taken once
        for kind in KINDS:
            fire(hook, partner, 50, kind)()
    for kind in KINDS:
        fit(kind)()
    for key, _, hook, _, partner in CASES:
        for kind in KINDS:
            for n in (args.n, 2 * args.n):
                counted(f"{key}-{kind}-{n}", fire(hook, partner, n, kind))
    for kind in KINDS:
        counted(f"fit-{kind}", fit(kind), collect=True)
    t = traces["traced"]  # what the traced fit recorded, passed out in a dump's label (callgrind keeps only counts)
    counted(f"{FACTS}{t.n_firings}-{t.n_calls}", lambda: None)


def figures(totals: dict[str, int], n: int) -> dict[str, dict[str, float]]:
    """Per-firing instructions of each case (untraced, traced, profiled; what loopviz and the profiler add) and the
    whole fits' counts and ratios."""
    out: dict[str, dict[str, float]] = {}
    for key, _, _, _, _ in CASES:
        plain, traced, profiled = (per_firing(totals, f"{key}-{kind}", n) for kind in KINDS)
        out[key] = {"untraced": plain, "traced": traced, "added": traced - plain,
                    "profiled": profiled, "profiler_added": profiled - plain}
    plain, traced, profiled = (totals[f"fit-{kind}"] for kind in KINDS)
    facts = next(label for label in totals if label.startswith(FACTS))
    firings, calls = (int(part) for part in facts.removeprefix(FACTS).split("-"))
    out["fit"] = {"untraced": plain, "traced": traced, "ratio": traced / plain,
                  "profiled": profiled, "profiler_ratio": profiled / plain,
                  "firings": firings, "calls": calls, "added_per_firing": (traced - plain) / firings}
    return out


def report(found: dict[str, dict[str, float]], n: int, steps: int) -> bool:
    """Print the figures beside the targets and the SimpleProfiler's; True when every target is met."""
    print(f"Lightning: instructions per hook firing, callbacks then module (callgrind; 5 callbacks; from N={n} and 2N):")
    print(f"  {'case (hook, partner)':72s} {'untraced':>10s} {'traced':>10s} {'added':>10s} {'target':>8s}       "
          f"{'SimpleProfiler added':>20s}")
    met = True
    for key, label, hook, _, partner in CASES:
        row, ok = found[key], found[key]["added"] <= TARGETS[key]
        met &= ok
        name = f"{label} ({hook}, {partner})"
        print(f"  {name:72s} {row['untraced']:10,.0f} {row['traced']:10,.0f} {row['added']:10,.0f} "
              f"{TARGETS[key]:8,} {'ok    ' if ok else 'MISSED'} {row['profiler_added']:20,.0f}")
    fit = found["fit"]
    ok = fit["ratio"] <= TARGETS["fit"]
    print(f"Whole trainer.fit ({steps} steps of 4, one torch thread): untraced {fit['untraced']:,.0f} instructions; "
          f"traced/untraced {fit['ratio']:.3f} (target {TARGETS['fit']}) {'ok' if ok else 'MISSED'}; "
          f"SimpleProfiler/untraced {fit['profiler_ratio']:.3f}")
    print(f"  the traced fit: {fit['firings']:,} firings, {fit['calls']:,} handler calls; added per firing, the handler "
          f"calls and every fixed cost included: {fit['added_per_firing']:,.0f}")
    return met and ok


if __name__ == "__main__":
    benchmark_main(__file__, __doc__, measure, figures, report, TARGETS)
