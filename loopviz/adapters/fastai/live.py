"""The live view of a traced fastai fit (`learn.trace(live=True)`): `LoopvizLive`, a callback the trace adds for its
duration, shows the split of the recent steps and the top finding so far in the progress bar's comment (fastprogress,
in a terminal and in a notebook), or on a line of its own where the fit has no bar (`learn.no_bar()`, a script
without ProgressCallback). It is a callback like any other, so its own time is recorded under its name.
"""
from __future__ import annotations

from typing import Any

from fastai.callback.core import Callback

from loopviz.trace.live import LiveStats
from loopviz.trace.live_display import LiveLine, live_text

__all__ = ["LoopvizLive"]


class LoopvizLive(Callback):
    "loopviz's live view (`learn.trace(live=True)`): the split of the recent steps and the top finding so far, refreshed at most once a second, in the progress bar's comment"
    order = 61  # after ProgressCallback (60), which writes the bar's comment (the smoothed loss) at each batch
    # fastai calls every callback at every event, and one without a handler for it looks the event up on the learner
    # and its model (fastcore's GetAttr) before finding nothing: this one delegates only what fastai's own
    # Callback.__call__ reads, which halves what it costs at the events it does not handle
    _xtra = ("training",)

    def __init__(self, stats: LiveStats, line: LiveLine | None = None):
        self.stats = stats
        self.line = line or LiveLine()
        self.text = ""
        self.base: str | None = None  # the comment the bar had before this callback added to it
        self.written: str | None = None  # the comment this callback last wrote

    def after_batch(self) -> None:
        """Refresh the numbers when a second has passed, and show them on this batch's bar."""
        refreshed = self.stats.tick()
        if refreshed:
            self.text = live_text(self.stats)
        if not self.text:
            return
        bar = getattr(getattr(self.learn, "progress", None), "pbar", None)
        if bar is None:
            if refreshed:
                self.line.show(self.stats)
        else:
            self.comment(bar)

    def comment(self, bar: Any) -> None:
        """Put the text after the bar's own comment (ProgressCallback writes the loss there at every training batch,
        and leaves it as it was at a validation batch: then what it had before this callback's text is kept)."""
        current = getattr(bar, "comment", "") or ""
        base = self.base if current == self.written else current
        self.base = base
        self.written = bar.comment = f"{base} · {self.text}" if base else self.text

    def after_fit(self) -> None:
        """Leave the last lines on screen."""
        self.close()

    def close(self) -> None:
        """Leave the last lines on screen: at after_fit, and as the trace ends (a fit that raised never reaches
        after_fit)."""
        self.line.stop()
