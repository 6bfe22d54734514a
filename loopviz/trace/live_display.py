"""How the live view (`trace(live=True)`) shows `LiveStats`: short text for a progress bar's comment or postfix, and
a line of its own (`LiveLine`, a rich `Live`) where the run has no bar. Every name is made visible (control
characters escaped) and cut here, where it leaves for a terminal or a notebook.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from loopviz.renderers.sanitise import cut, one_line
from loopviz.trace.live import LiveStats

__all__ = ["live_items", "finding_text", "live_text", "live_lines", "LiveLine", "SHOWN", "NAME_WIDTH"]

SHOWN = 5  # series named in the split; the rest are 'other'
NAME_WIDTH = 16  # characters of a series' name
FINDING_WIDTH = 72  # characters of the finding's title


def _name(name: str) -> str:
    return cut(one_line(name), NAME_WIDTH)


def live_items(stats: LiveStats, shown: int = SHOWN) -> list[tuple[str, str]]:
    """(series, its share as '41%') for the largest `shown` series of the recent split, then 'other' for the rest;
    [] before the first refresh saw any time."""
    shares = stats.shares
    items = [(_name(name), f"{100 * share:.0f}%") for name, share in shares[:shown]]
    rest = sum(share for _, share in shares[shown:])
    if rest > 0:
        items.append(("other", f"{100 * rest:.0f}%"))
    return items


def finding_text(stats: LiveStats, short: bool = False) -> str:
    """The top finding so far: 'critical: The model waits for data...', or `short`, for a bar's narrow metrics, its
    severity and kind ('warning: input_bound'); '' before the first diagnosis, 'none' after one that found nothing."""
    if not stats.diagnosed:
        return ""
    finding = stats.finding
    if finding is None:
        return "none"
    said = cut(one_line(finding.kind), NAME_WIDTH) if short else cut(one_line(finding.title), FINDING_WIDTH)
    return f"{finding.severity}: {said}"


def _parts(stats: LiveStats) -> tuple[str, str, str]:
    """(the split as 'draw 41% · forward 18% · ...', the top finding, why the view stopped), each '' when none."""
    split = " · ".join(f"{name} {share}" for name, share in live_items(stats))
    return split, finding_text(stats), one_line(stats.stopped)


def live_text(stats: LiveStats) -> str:
    """The split and the top finding on one line: 'draw 41% · forward 18% · ... | warning: ...'; '' before there is
    anything to show."""
    return " | ".join(part for part in _parts(stats) if part)


class LiveLine:
    """Lines of their own showing the live view, where the run has no progress bar: the split, and under it the top
    finding. In a terminal, a rich `Live` redrawn only when told (no refresh thread: nothing runs beside the traced
    loop) and left on screen when stopped; in a notebook, one output of the cell updated in place; where output goes
    to a file or a pipe, printed at most every `PRINT_EVERY_S` seconds and once more as it stops (a log gets the split
    now and then, not a line a second)."""

    PRINT_EVERY_S = 10.0

    def __init__(self, console: Any = None, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.clock = clock  # seconds, for the printed lines
        self.live: Any = None
        self.handle: Any = None  # in a notebook: the cell's output the lines are shown in
        self.printed_at: float | None = None
        self.unprinted: list[str] = []  # the lines shown since the last print, where lines are printed

    def show(self, stats: LiveStats) -> None:
        """Show the live view of `stats`: redrawn now on a terminal or in a notebook, printed when a file's turn is
        due."""
        from rich.console import Console, Group
        from rich.text import Text

        lines = live_lines(stats)
        if not lines:
            return
        if self.console is None:
            self.console = Console(stderr=True)  # (where tqdm writes its bars: standard output keeps what the run prints)
        if self.console.is_jupyter:  # one output of the cell, updated in place (rich's Live there needs ipywidgets)
            self.show_in_notebook("\n".join(lines))
            return
        if self.console.is_terminal:
            if self.live is None:
                from rich.live import Live

                self.live = Live(Text(""), console=self.console, auto_refresh=False, transient=False)
                self.live.start()
            self.live.update(Group(*(Text(line, no_wrap=True, overflow="ellipsis") for line in lines)), refresh=True)
            return
        self.unprinted = lines
        now = self.clock()
        if self.printed_at is None or now - self.printed_at >= self.PRINT_EVERY_S:
            self.printed_at = now
            self.print_lines()

    def show_in_notebook(self, text: str) -> None:
        """The lines as one text output of the running cell, made on first use and updated after."""
        from IPython.display import display

        bundle = {"text/plain": text}
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)

    def print_lines(self) -> None:
        """Print the lines not printed yet (where lines are printed)."""
        for line in self.unprinted:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.unprinted = []

    def stop(self) -> None:
        """Leave the last lines on screen (print them, where lines are printed) and stop."""
        live, self.live = self.live, None
        if live is not None:
            live.stop()
        if self.unprinted:
            self.print_lines()


def live_lines(stats: LiveStats) -> list[str]:
    """The live view as lines of their own: 'loopviz live: draw 41% · ...', then '  top finding: warning: ...'."""
    split, finding, stopped = _parts(stats)
    lines = [f"loopviz live: {split}"] if split else []
    lines += [f"  top finding so far: {finding}"] if finding and lines else []
    return lines + [f"loopviz: {stopped}"] if stopped else lines
