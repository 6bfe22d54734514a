"""The live view of a traced Hugging Face Trainer (`loopviz.tracing(trainer, live=True)`): `LoopvizLive`, a
callback the trace adds to the trainer for its duration, refreshes the split of the recent steps and the top finding
so far at most once a second and shows them after the Trainer's progress bar (its ProgressCallback's tqdm bar, as a
postfix), or on lines of their own where the trainer has no bar (`disable_tqdm=True`). The callback's own time is
recorded under its name, as any callback's.
"""
from __future__ import annotations

import weakref
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from loopviz.trace.live import LiveStats
from loopviz.trace.live_display import LiveLine, live_text

__all__ = ["LoopvizLive"]


class LoopvizLive(TrainerCallback):
    """loopviz's live view (`loopviz.tracing(trainer, live=True)`): the split of the recent steps and the top finding
    so far, refreshed at most once a second, after the progress bar."""

    def __init__(self, stats: LiveStats, handler: Any, line: LiveLine | None = None):
        self.stats = stats
        self.handler = weakref.ref(handler)  # the trainer's callback handler, where its ProgressCallback is
        self.line = line or LiveLine()

    def bar(self) -> Any:
        """The tqdm bar the Trainer shows now: evaluation's while it evaluates, else training's; None without one."""
        handler = self.handler()
        progress = next((cb for cb in getattr(handler, "callbacks", ()) if isinstance(cb, ProgressCallback)), None)
        if progress is None:
            return None
        return getattr(progress, "prediction_bar", None) or getattr(progress, "training_bar", None)

    def refresh(self) -> None:
        """When a second has passed: the numbers refreshed, on the bar or on lines of their own."""
        if not self.stats.tick():
            return
        bar = self.bar()
        if bar is None:
            self.line.show(self.stats)
        else:
            bar.set_postfix_str(live_text(self.stats), refresh=False)  # drawn at the bar's next update

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.refresh()

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.refresh()

    def close(self) -> None:
        """The trace ended: the last lines left on screen."""
        self.line.stop()
