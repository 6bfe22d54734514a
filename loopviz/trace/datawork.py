"""The data loop's timed work (`data=True`): the layout of its records.

A loader's work is recorded per batch, in the process that did it: per step (a transform, or a stage as a whole) its
total time and how many times it ran in that batch (items, for per-item steps), with the batch's window (the start of
its first item to its end). The main process adds its own per batch (the move to the device, the batch transforms)
and one row per pass of the loader. Every time is `time.perf_counter_ns()` of the process that read it: on Linux,
macOS and Windows that clock is system-wide (CLOCK_MONOTONIC, mach_absolute_time, QueryPerformanceCounter), so a
worker's times and the main process's lie on one timeline with no offset to estimate (which is why a trace on an
injected test clock, `now=`, cannot time its data loop).

Worker processes cannot append to the main process's lists: they write their rows to files (`loopviz.trace.spool`).
"""
from __future__ import annotations

__all__ = ["DATA_FIELDS", "ND", "D_STEP", "D_PASS", "D_WORKER", "D_PID", "D_BATCH", "D_START", "D_END", "D_TOTAL",
           "D_COUNT", "STEP_FIELDS", "BATCH", "PASS", "MOVE", "FETCH", "MAIN", "MAX_DATA_ROWS"]

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
FETCH = "fetch"  # the main process's stage of getting one batch from a torch loader's iterator (waiting, or making it)
MAIN = -1  # the worker id of the main process
MAX_DATA_ROWS = 1_000_000  # rows a trace keeps (72 MB; about 80,000 batches of a loader with a dozen steps)
