"""The flat record layouts of a trace and the codes stored in them.

Firings, callback calls and logged state changes are rows of integers: int64 matrices in these fields' order
for reports and files (in memory, firings and calls are packed tighter: `loopviz.trace.records`). Each
layout is named here once; every index into a row (`F_END`, `C_DUR`, ...) is computed from those names,
so a reordered or extended layout cannot leave a stale index behind.
"""
from __future__ import annotations

__all__ = [
    "FIRING_FIELDS", "CALL_FIELDS", "CHANGE_FIELDS", "NF", "NC", "NCH",
    "F_EVENT", "F_MODE", "F_EPOCH", "F_ITER", "F_LOOP", "F_PARENT", "F_START", "F_END", "F_STATUS", "F_DEV_START",
    "F_DEV_END", "C_FIRING", "C_CALLBACK", "C_START", "C_DUR", "C_STATUS", "CH_FIRING", "CH_CALLBACK", "CH_ATTR",
    "MODES", "STATUS", "RAN", "NO_HANDLER", "SKIPPED", "SKIPPED_TRAIN", "SKIPPED_VALID", "CANCELLED", "ERROR",
    "UNKNOWN_LOOP",
]

FIRING_FIELDS = ("event", "mode", "epoch", "iter", "loop", "parent", "start", "end", "status", "dev_start", "dev_end")
CALL_FIELDS = ("firing", "callback", "start", "dur", "status")
CHANGE_FIELDS = ("firing", "callback", "attr")
NF, NC, NCH = len(FIRING_FIELDS), len(CALL_FIELDS), len(CHANGE_FIELDS)

# positions in a firing row
F_EVENT = FIRING_FIELDS.index("event")
F_MODE = FIRING_FIELDS.index("mode")
F_EPOCH = FIRING_FIELDS.index("epoch")
F_ITER = FIRING_FIELDS.index("iter")
F_LOOP = FIRING_FIELDS.index("loop")
F_PARENT = FIRING_FIELDS.index("parent")  # the enclosing firing's index, -1 at the top
F_START = FIRING_FIELDS.index("start")
F_END = FIRING_FIELDS.index("end")
F_STATUS = FIRING_FIELDS.index("status")
F_DEV_START = FIRING_FIELDS.index("dev_start")  # device-clock times, -1 without one
F_DEV_END = FIRING_FIELDS.index("dev_end")

# positions in a callback-call row
C_FIRING = CALL_FIELDS.index("firing")
C_CALLBACK = CALL_FIELDS.index("callback")
C_START = CALL_FIELDS.index("start")
C_DUR = CALL_FIELDS.index("dur")
C_STATUS = CALL_FIELDS.index("status")

# positions in a state-change row
CH_FIRING = CHANGE_FIELDS.index("firing")
CH_CALLBACK = CHANGE_FIELDS.index("callback")
CH_ATTR = CHANGE_FIELDS.index("attr")

MODES = ("", "train", "valid")
# Call and firing outcomes. A call 'ran' when its handler ran; the skipped ones were called by the loop but did
# nothing: no handler, or switched off by the callback's own flags, in every phase, in training or in validation
# (the adapter names its flags in the trace's meta, `skip_statuses`: fastai's run, run_train, run_valid).
STATUS = ("ran", "no_handler", "skipped", "skipped_in_train", "skipped_in_valid", "cancelled", "error")
RAN = STATUS.index("ran")
NO_HANDLER = STATUS.index("no_handler")
SKIPPED = STATUS.index("skipped")
SKIPPED_TRAIN = STATUS.index("skipped_in_train")
SKIPPED_VALID = STATUS.index("skipped_in_valid")
CANCELLED = STATUS.index("cancelled")
ERROR = STATUS.index("error")

# The loop of an aggregate that cannot be told (files written before aggregates were split by loop).
UNKNOWN_LOOP = -1
