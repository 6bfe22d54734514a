"""The live view of a traced Lightning run (`loopviz.tracing(trainer, live=True)`): `LoopvizLive`, a callback the
trace adds to the trainer for its duration, refreshes the split of the recent steps and the top finding so far at most
once a second; the trainer's progress bar shows them among its metrics (its `get_metrics`, wrapped on the bar for the
trace), or they get lines of their own where the trainer has no bar. The callback's own time is recorded under its
name, as any callback's.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from loopviz.trace.live import LiveStats
from loopviz.trace.live_display import LiveLine, finding_text, live_items

__all__ = ["LoopvizLive"]

FINDING_KEY = "top finding"


class LoopvizLive(pl.Callback):
    """loopviz's live view (`loopviz.tracing(trainer, live=True)`): the split of the recent steps and the top finding
    so far, refreshed at most once a second, among the progress bar's metrics."""

    def __init__(self, stats: LiveStats, line: LiveLine | None = None):
        self.stats = stats
        self.line = line or LiveLine()
        self.items: dict[str, str] = {}

    def metrics(self) -> dict[str, str]:
        """What the progress bar adds to its metrics: each series' share, then the top finding."""
        return dict(self.items)

    def refresh(self, trainer: pl.Trainer) -> None:
        """When a second has passed: the numbers refreshed, for the bar's next update or on lines of their own."""
        if not self.stats.tick():
            return
        self.items = dict(live_items(self.stats))
        finding = finding_text(self.stats, short=True)
        if finding:
            self.items[FINDING_KEY] = finding
        if self.stats.stopped:
            self.items["loopviz"] = "live view stopped"
        bar = trainer.progress_bar_callback
        if bar is None or not bar.is_enabled:
            self.line.show(self.stats)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        self.refresh(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any,
                                **kwargs: Any) -> None:
        self.refresh(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        self.refresh(trainer)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any,
                             **kwargs: Any) -> None:
        self.refresh(trainer)

    def close(self) -> None:
        """The trace ended: the last lines left on screen."""
        self.line.stop()


def with_live_metrics(get_metrics: Any, live: LoopvizLive) -> Any:
    """A progress bar's `get_metrics` that adds the live view's to what it gives."""
    import functools

    @functools.wraps(get_metrics)
    def metrics(*args: Any, **kwargs: Any) -> Any:
        return {**get_metrics(*args, **kwargs), **live.metrics()}

    return metrics
