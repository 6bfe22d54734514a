"""The data loop's timed work (`data=True`): the record layout, where worker processes spool their records, and how
they are read back.

A loader's work is recorded per batch, in the process that did it: per step (a transform, or a stage as a whole) its
total time and how many times it ran in that batch (items, for per-item steps), with the batch's window (the start of
its first item to its end). The main process adds its own per batch (the move to the device, the batch transforms)
and one row per pass of the loader. Every time is `time.perf_counter_ns()` of the process that read it: on Linux,
macOS and Windows that clock is system-wide (CLOCK_MONOTONIC, mach_absolute_time, QueryPerformanceCounter), so a
worker's times and the main process's lie on one timeline with no offset to estimate; a trace on an injected test
clock (`now=`) keeps its data rows on the real clock, and says so (`meta['data_clock']`).

Worker processes cannot append to the main process's lists: each writes its rows, one batch at a time, to a file of
its own in a directory the trace made (`Spool`), read back and removed when the trace ends. A file is appended with
one `os.write` per batch, so a worker that is killed loses at most the batch it was making.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from typing import Any

__all__ = ["DATA_FIELDS", "ND", "D_STEP", "D_PASS", "D_WORKER", "D_PID", "D_BATCH", "D_START", "D_END", "D_TOTAL",
           "D_COUNT", "STEP_FIELDS", "BATCH", "PASS", "MOVE", "MAIN", "Spool"]

# one row per step per batch (or per pass): `step` indexes `TraceData.data_steps`; `worker` is the worker's id, MAIN
# for the main process; `batch` the batch's index in its pass (the order the loader yields them); `start`/`end` the
# batch's window in that process (the pass's, for a PASS row); `total` the step's time in it (ns), `count` its calls
DATA_FIELDS = ("step", "pass", "worker", "pid", "batch", "start", "end", "total", "count")
ND = len(DATA_FIELDS)
D_STEP, D_PASS, D_WORKER, D_PID, D_BATCH, D_START, D_END, D_TOTAL, D_COUNT = range(ND)
STEP_FIELDS = ("loader", "stage", "step", "per")  # each entry of `data_steps`: step '' is the stage as a whole
BATCH = "batch"  # the stage of a batch's whole making in its process (count: its items)
PASS = "pass"  # the stage of one pass of the loader, in the main process (count: the batches it gave)
MOVE = "to_device"  # the stage of the move of a batch to the loader's device
MAIN = -1  # the worker id of the main process


class Spool:
    """A directory where worker processes append their rows, one file per process; pickled as its path only."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.mkdtemp(prefix="loopviz-data-")
        self._fd: int | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": self.directory}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])

    def write(self, rows: array) -> None:
        """Append rows (a flat int64 array) to this process's file."""
        pid = os.getpid()
        if pid != self._pid:  # a process forked from one that had a file opens its own
            self._fd = os.open(os.path.join(self.directory, f"{pid}.rows"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                               0o600)
            self._pid = pid
        os.write(self._fd, rows.tobytes())

    def read(self) -> array:
        """Every whole row the workers wrote (a cut-short last row is left out)."""
        rows = array("q")
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return rows
        for name in names:
            try:
                with open(os.path.join(self.directory, name), "rb") as file:
                    raw = file.read()
            except OSError:
                continue
            whole = len(raw) - len(raw) % (ND * rows.itemsize)
            rows.frombytes(raw[:whole])
        return rows

    def remove(self) -> None:
        """Remove the directory and what is in it."""
        shutil.rmtree(self.directory, ignore_errors=True)
