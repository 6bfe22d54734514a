"""Trace files that cannot hurt: whatever a file holds, loading it either gives a trace every report works on,
or raises a LoopvizError naming the file and the field. A corpus of broken files made from a real trace, the
reading limits (gzip bombs, devices, FIFOs), a fuzz test, merge's arguments and the CLI."""
from __future__ import annotations

import copy
import gc
import gzip
import json
import os
import subprocess
import sys
import time
import tracemalloc
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner
from fastai.callback.core import FetchPredsCallback
from fastai.test_utils import synth_learner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopviz import LoopvizError, merge
from loopviz.cli import cli
from loopviz.renderers.sanitise import NAME_LIMIT
from loopviz.trace import files
from loopviz.trace.data import HIST_BUCKETS, TraceData
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_START, C_STATUS, CH_ATTR, CH_CALLBACK, CH_FIRING, F_DEV_END, F_DEV_START, F_END,
    F_EVENT,
    F_LOOP, F_MODE, F_PARENT, F_START, F_STATUS, MODES, NC, NCH, NF, STATUS,
)
from loopviz.trace.datawork import D_COUNT, D_END, D_STEP, D_TOTAL, D_WORKER, ND
from loopviz.trace.trace import Trace
from loopviz.trace.sketch import MAX_KEY
from loopviz.trace.html import html_report
from loopviz.trace.validate import JSON_CHECKS, MAX_NAME, Invalid

ROOT = Path(__file__).resolve().parents[1]
MiB = 2**20


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real fastai trace as JSON, with every field filled: raw records, state changes, a loop nested in another
    (get_preds in after_validate), and records past small caps, so every aggregate has rows."""
    learn = synth_learner(path=tmp_path_factory.mktemp("learn"))
    with learn.no_bar(), learn.no_logging():
        with learn.trace(changes=True, max_calls=60, max_firings=40, data=True) as t:
            learn.fit(1, cbs=FetchPredsCallback())
    obj = t.to_json()
    # waits for the GPU need one (test_trace_waits.py records them with a fake GPU): rows of the shape it records
    obj["tracked_waits"] = True
    obj["wait_agg"] = [[[0, 0, 1, 0, -1], [2, 3, 5_000, 3_000, "fastai/callback/progress.py:33 in after_batch"]],
                       [[0, 1, 1, -1, 2], [1, 1, 700, 700, "train.py:9 in loss"]]]
    assert all(obj[f.name] not in ([], {}, 0) for f in fields(TraceData)), "every field has something to break"
    return obj


def save(obj: Any, path: Path) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def refused(path: Any, *fragments: str, **limits: int) -> str:
    """Loading `path` raises exactly a LoopvizError naming the file and saying each fragment; its message."""
    with pytest.raises(LoopvizError) as caught:
        Trace.load(path, **limits)
    message = str(caught.value)
    assert caught.type is LoopvizError, caught.type
    assert repr(str(path)) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- the corpus: a real trace, broken one way at a time ----------------------------------------------


def at(field: str, index: int, value: Any) -> Callable[[dict], None]:
    """Set obj[field][index] (a flat record array's value, a list's entry) to `value`."""
    def change(obj: dict) -> None:
        obj[field][index] = value
    return change


def record(field: str, width: int, row: int, column: int, value: Callable[[dict], Any] | Any) -> Callable[[dict], None]:
    """Set one value of one record of a flat record array; `value` may be computed from the trace."""
    def change(obj: dict) -> None:
        obj[field][row * width + column] = value(obj) if callable(value) else value
    return change


def setting(field: str, value: Any) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        obj[field] = value
    return change


def in_row(field: str, row: int, edit: Callable[[list], None]) -> Callable[[dict], None]:
    """Edit one [key, value] row of an aggregate field."""
    def change(obj: dict) -> None:
        edit(obj[field][row])
    return change


def n_firings(obj: dict) -> int:
    return len(obj["firings"]) // NF


def in_sketch(edit: Callable[[dict], None]) -> Callable[[list], None]:
    """Edit the sketch of one [key, aggregate] row."""
    def change(row: list) -> None:
        edit(row[1]["sketch"])
    return change


def first_bin(position: int, value: Any) -> Callable[[dict], None]:
    """Set the key (position 0) or count (1) of a sketch's first bin."""
    def edit(sketch: dict) -> None:
        sketch["bins"][0][position] = value
    return edit


def key_value(position: int, value: Any) -> Callable[[list], None]:
    def edit(row: list) -> None:
        row[0][position] = value
    return edit


def agg_value(name: str, value: Any) -> Callable[[list], None]:
    def edit(row: list) -> None:
        row[1][name] = value
    return edit


def firing_value(row: int, column: int) -> Callable[[dict], int]:
    """One value of one firing record, read from the trace being broken."""
    return lambda obj: obj["firings"][row * NF + column]


def in_span(index: int, position: int, value: Callable[[list], int] | int) -> Callable[[dict], None]:
    """Set one integer of one loop span; `value` may be computed from the span."""
    def change(obj: dict) -> None:
        span = obj["loop_spans"][index]
        span[position] = value(span) if callable(value) else value
    return change


def copies_of_loop(index: int, copies: int) -> Callable[[dict], None]:
    """Add `copies` loops that are `index` again: same label, same span."""
    def change(obj: dict) -> None:
        for _ in range(copies):
            obj["loops"].append(obj["loops"][index])
            obj["loop_spans"].append(list(obj["loop_spans"][index]))
            obj["no_handler_by_loop"].append(0)
    return change


def call_durations(start: int, dur: int) -> Callable[[dict], None]:
    """Every call starts at `start` and lasts `dur` ns."""
    def change(obj: dict) -> None:
        for row in range(len(obj["calls"]) // NC):
            obj["calls"][row * NC + C_START], obj["calls"][row * NC + C_DUR] = start, dur
    return change


def every_row(field: str, edit: Callable[[list], None]) -> Callable[[dict], None]:
    def change(obj: dict) -> None:
        for row in obj[field]:
            edit(row)
    return change


def without(name: str) -> Callable[[list], None]:
    def edit(row: list) -> None:
        del row[1][name]
    return edit


CORPUS: list[tuple[str, Callable[[dict], None], str, str]] = [
    # record arrays: lengths, types, sizes
    ("firings not whole records", lambda o: o["firings"].append(1),
     "firings", "not a whole number of 11-integer records"),
    ("calls not whole records", lambda o: o["calls"].pop(), "calls", "not a whole number of 5-integer records"),
    ("change_log not whole records", lambda o: o["change_log"].append(0), "change_log", "3-integer records"),
    ("int beyond int64 in firings", record("firings", NF, 2, F_START, 2**63),
     "firings", "record 2: start is 9223372036854775808"),
    ("int below int64 in calls", record("calls", NC, 1, C_DUR, -2**63 - 1), "calls", "record 1: dur is"),
    ("float in calls", record("calls", NC, 0, C_START, 1.5), "calls", "record 0: start is 1.5, not a 64-bit integer"),
    ("string in change_log", record("change_log", NCH, 0, CH_ATTR, "lr"), "change_log", "record 0: attr is 'lr'"),
    ("null in firings", record("firings", NF, 0, F_EVENT, None), "firings", "record 0: event is null"),
    ("firings not a list", setting("firings", {"0": 1}), "firings", "not a list of integers"),
    # indices in records
    ("firing event index", record("firings", NF, 3, F_EVENT, lambda o: len(o["events"])), "firings",
     "record 3: event index {events} is out of range (the trace has {events} events)"),
    ("firing event -1", record("firings", NF, 0, F_EVENT, -1), "firings", "event index -1 is out of range"),
    ("firing mode", record("firings", NF, 1, F_MODE, len(MODES)), "firings", "record 1: mode 3 is out of range"),
    ("firing loop", record("firings", NF, 4, F_LOOP, lambda o: len(o["loops"])), "firings",
     "record 4: loop index {loops} is out of range (-1 for none, or below {loops}: the trace has {loops} loops)"),
    ("firing loop -2", record("firings", NF, 4, F_LOOP, -2), "firings", "loop index -2 is out of range"),
    ("firing parent", record("firings", NF, 5, F_PARENT, n_firings), "firings",
     "record 5: parent firing index {firings} is out of range"),
    ("firing parent -2", record("firings", NF, 5, F_PARENT, -2), "firings", "parent firing index -2 is out of range"),
    ("firing status", record("firings", NF, 0, F_STATUS, len(STATUS)), "firings", "status 7 is out of range"),
    ("firing negative start", record("firings", NF, 7, F_START, -5), "firings", "record 7: start time -5"),
    ("firing negative end", record("firings", NF, 7, F_END, -1), "firings", "end time -1 is out of range"),
    ("firing device start", record("firings", NF, 0, F_DEV_START, -2), "firings", "device start time -2"),
    ("call firing index", record("calls", NC, 3, C_FIRING, n_firings), "calls",
     "record 3: firing index {firings} is out of range (the trace has {firings} firings)"),
    ("call callback index", record("calls", NC, 3, C_CALLBACK, 17), "calls",
     "record 3: callback index 17 is out of range (the trace has {callbacks} callbacks)"),
    ("call negative callback", record("calls", NC, 0, C_CALLBACK, -1), "calls", "callback index -1 is out of range"),
    ("call status", record("calls", NC, 2, C_STATUS, 99), "calls", "record 2: status 99 is out of range"),
    ("call negative duration", record("calls", NC, 2, C_DUR, -10), "calls", "record 2: duration -10"),
    ("change firing index", record("change_log", NCH, 1, CH_FIRING, 10**6), "change_log", "firing index 1000000"),
    ("change callback index", record("change_log", NCH, 1, CH_CALLBACK, 99), "change_log", "callback index 99"),
    ("change attr index", record("change_log", NCH, 1, CH_ATTR, 99), "change_log",
     "record 1: attribute index 99 is out of range (the trace has {attrs} attributes)"),
    # the data loop's rows and steps
    ("data_work not whole records", lambda o: o["data_work"].pop(), "data_work", "not a whole number of 9-integer"),
    ("data_work step index", record("data_work", ND, 2, D_STEP, lambda o: len(o["data_steps"])), "data_work",
     "record 2: step index {data_steps} is out of range (the trace has {data_steps} data steps)"),
    ("data_work worker -2", record("data_work", ND, 0, D_WORKER, -2), "data_work", "record 0: worker -2 is out of range"),
    ("data_work negative total", record("data_work", ND, 1, D_TOTAL, -4), "data_work", "record 1: total -4"),
    ("data_work end before start", record("data_work", ND, 3, D_END, 1), "data_work",
     "record 3: its end is before its start"),
    ("data_work a string", record("data_work", ND, 0, D_COUNT, "8"), "data_work", "record 0: count is '8'"),
    ("data_steps entry of 3", at("data_steps", 0, ["train", "after_item", "Flip"]), "data_steps",
     "entry 0: is a list of 3, not a list of 4 strings"),
    ("data_steps per unknown", at("data_steps", 1, ["train", "after_item", "Flip", "epoch"]), "data_steps",
     "entry 1: per is 'epoch', not one of item, batch, pass"),
    ("data_steps a number", at("data_steps", 0, ["train", 3, "", "item"]), "data_steps", "entry 0: is 3, not a string"),
    # names
    ("callbacks [{}]", setting("callbacks", [{}]), "callbacks", "entry 0: has no 'cls'"),
    ("callback without name", lambda o: o["callbacks"][1].pop("name"), "callbacks", "entry 1: has no 'name'"),
    ("callback cls not a string", lambda o: o["callbacks"][0].update(cls=7),
     "callbacks", "entry 0 'cls': is 7, not a string"),
    ("callback order not a number", lambda o: o["callbacks"][0].update(order="10"),
     "callbacks", "'order': is '10', not a number"),
    ("callback not an object", at("callbacks", 2, "Recorder"), "callbacks", "entry 2: is 'Recorder', not an object"),
    ("event name not a string", at("events", 0, 5), "events", "entry 0: is 5, not a string"),
    ("event named twice", at("events", 1, "before_fit"), "events", "names 'before_fit' twice"),
    ("loop label null", at("loops", 0, None), "loops", "entry 0: is null, not a string"),
    ("attr not a string", at("attrs", 0, ["lr"]), "attrs", "entry 0: is a list of 1, not a string"),
    ("framework not a string", setting("framework", 2.8), "framework", "is 2.8, not a string"),
    ("clock not a string", setting("clock", None), "clock", "is null, not a string"),
    ("work_names row of 2", at("work_names", 0, ["a", "b"]), "work_names", "entry 0: is a list of 2, not a list of 3"),
    ("work_names row with a number", at("work_names", 0, ["a", "b", 3]), "work_names", "entry 0: is 3, not a string"),
    # counts
    ("negative dropped_calls", setting("dropped_calls", -999999999999), "dropped_calls", "is -999999999999, negative"),
    ("negative no_handler_calls", setting("no_handler_calls", -1), "no_handler_calls", "negative"),
    ("dropped_firings a string", setting("dropped_firings", "66"), "dropped_firings", "is '66', not a 64-bit integer"),
    ("dropped_changes a float", setting("dropped_changes", 44.0), "dropped_changes", "is 44.0"),
    ("dropped_calls huge", setting("dropped_calls", 10**30), "dropped_calls", "an integer of about 30 digits"),
    ("dropped_calls true", setting("dropped_calls", True), "dropped_calls", "is true, not a 64-bit integer"),
    ("no_handler_by_loop negative", at("no_handler_by_loop", 0, -3), "no_handler_by_loop", "entry 0: is -3, negative"),
    ("no_handler_by_loop length", lambda o: o["no_handler_by_loop"].append(0), "no_handler_by_loop",
     "entries for {loops} loops; it must have one per loop (or none)"),
    ("tracked_changes not a bool", setting("tracked_changes", 1), "tracked_changes", "is 1, not true or false"),
    # loops
    ("loop_spans one short", lambda o: o["loop_spans"].pop(), "loop_spans",
     "entries for {loops} loops; it must have one per loop"),
    ("loop span of 5", lambda o: o["loop_spans"][0].pop(),
     "loop_spans", "entry 0: is a list of 5, not a list of 6 integers"),
    ("loop span with a string", lambda o: o["loop_spans"][1].__setitem__(0, "0"), "loop_spans", "entry 1: is '0'"),
    ("loop span parent loop", lambda o: o["loop_spans"][1].__setitem__(2, 99), "loop_spans",
     "entry 1: parent loop index 99 is out of range"),
    ("loop span negative start", lambda o: o["loop_spans"][0].__setitem__(0, -7), "loop_spans", "is -7, less than -1"),
    ("loop span parent firing", lambda o: o["loop_spans"][1].__setitem__(3, -3), "loop_spans", "is -3, less than -2"),
    # aggregates
    ("aggregate row not a pair", at("overflow_firings", 0, [[0, 0, 0]]), "overflow_firings", "row 0: is a list of 1"),
    ("aggregate key arity", in_row("overflow_calls", 0, lambda r: r[0].pop()), "overflow_calls",
     "row 0 key: is a list of 4, not a list of 5 integers"),
    ("aggregate key not ints", in_row("overflow_nested", 0, key_value(1, "x")), "overflow_nested", "row 0 key: is 'x'"),
    ("aggregate event index", in_row("overflow_firings", 0, key_value(1, 99)), "overflow_firings",
     "event index 99 is out of range (the trace has {events} events)"),
    ("aggregate loop index", in_row("overflow_nested", 0, key_value(0, 99)), "overflow_nested", "loop index 99"),
    ("aggregate mode", in_row("overflow_firings", 0, key_value(2, -1)), "overflow_firings", "mode -1 is out of range"),
    ("aggregate callback index", in_row("overflow_calls", 0, key_value(3, 99)), "overflow_calls",
     "callback index 99 is out of range (the trace has {callbacks} callbacks)"),
    ("aggregate status", in_row("overflow_calls", 0, key_value(4, 7)), "overflow_calls", "status 7 is out of range"),
    ("work aggregate event", in_row("overflow_work", 0, key_value(2, -1)), "overflow_work", "event index -1"),
    ("work aggregate nested flag", in_row("overflow_work", 0, key_value(4, 2)), "overflow_work", "nested flag 2"),
    ("aggregate not an object", in_row("overflow_work", 0, lambda r: r.__setitem__(1, [1, 2])), "overflow_work",
     "row 0: is a list of 2, not an object"),
    ("aggregate without count", in_row("overflow_calls", 1, without("count")),
     "overflow_calls", "row 1: has no 'count'"),
    ("aggregate count 0", in_row("overflow_calls", 1, agg_value("count", 0)),
     "overflow_calls", "'count': is 0, less than 1"),
    ("aggregate total huge", in_row("overflow_calls", 1, agg_value("total", 2**64)), "overflow_calls", "'total'"),
    ("aggregate negative total", in_row("overflow_firings", 1, agg_value("total", -1)), "overflow_firings", "negative"),
    ("aggregate min a string", in_row("overflow_firings", 1, agg_value("min", "1")),
     "overflow_firings", "'min': is '1'"),
    # aggregates' sketches (loopviz.trace.sketch): each bin [key, count], keys increasing in range, counts add up
    ("aggregate without sketch", in_row("overflow_calls", 1, without("sketch")),
     "overflow_calls", "row 1: has no 'sketch'"),
    ("aggregate with a log2 hist in version 5", in_row("overflow_calls", 1, lambda r: r[1].update(
        hist=[0] * HIST_BUCKETS, sketch=None)), "overflow_calls", "row 1 'sketch': is null, not an object"),
    ("sketch not an object", in_row("overflow_firings", 0, agg_value("sketch", [1, 2])), "overflow_firings",
     "row 0 'sketch': is a list of 2, not an object with zeros and bins"),
    ("sketch without bins", in_row("overflow_firings", 0, in_sketch(lambda k: k.pop("bins"))), "overflow_firings",
     "row 0 'sketch': has no 'bins'"),
    ("sketch negative zeros", in_row("overflow_work", 0, in_sketch(lambda k: k.update(zeros=-1))), "overflow_work",
     "row 0 'sketch' 'zeros': is -1, negative"),
    ("sketch bins not a list", in_row("overflow_firings", 0, in_sketch(lambda k: k.update(bins={"3": 1}))),
     "overflow_firings", "row 0 'sketch' 'bins': is an object, not a list"),
    ("sketch bin not a pair", in_row("overflow_firings", 0, in_sketch(lambda k: k["bins"].__setitem__(0, [1, 2, 3]))),
     "overflow_firings", "row 0 'sketch' bin 0: is a list of 3, not a [key, count] pair"),
    ("sketch negative count", in_row("overflow_nested", 0, in_sketch(first_bin(1, -1))), "overflow_nested",
     "row 0 'sketch' bin 0 count: is -1, less than 1"),
    ("sketch count 0", in_row("overflow_nested", 0, in_sketch(first_bin(1, 0))), "overflow_nested",
     "row 0 'sketch' bin 0 count: is 0, less than 1"),
    ("sketch count NaN", in_row("overflow_calls", 0, in_sketch(first_bin(1, float("nan")))), "overflow_calls",
     "row 0 'sketch' bin 0 count: is nan, not a 64-bit integer"),
    ("sketch count a float", in_row("overflow_calls", 0, in_sketch(first_bin(1, 2.0))), "overflow_calls",
     "row 0 'sketch' bin 0 count: is 2.0, not a 64-bit integer"),
    ("sketch key a string", in_row("overflow_calls", 0, in_sketch(first_bin(0, "3"))), "overflow_calls",
     "row 0 'sketch' bin 0 key: is '3', not a 64-bit integer"),
    ("sketch key a float", in_row("overflow_calls", 0, in_sketch(first_bin(0, 1.5))), "overflow_calls",
     "row 0 'sketch' bin 0 key: is 1.5, not a 64-bit integer"),
    ("sketch key huge", in_row("overflow_calls", 0, in_sketch(first_bin(0, 10**6))), "overflow_calls",
     f"row 0 'sketch' bin 0: key 1000000 is out of range (0 to {MAX_KEY}: durations of 1 to 2**63 ns)"),
    ("sketch key past int64", in_row("overflow_calls", 0, in_sketch(first_bin(0, 2**80))), "overflow_calls",
     "row 0 'sketch' bin 0 key: is an integer of about 24 digits, not a 64-bit integer"),
    ("sketch key negative", in_row("overflow_calls", 0, in_sketch(first_bin(0, -1))), "overflow_calls",
     "row 0 'sketch' bin 0: key -1 is out of range"),
    ("sketch keys repeat", in_row("overflow_work", 0, in_sketch(lambda k: k["bins"].append(list(k["bins"][-1])))),
     "overflow_work", "keys must increase"),
    ("sketch counts more than count",
     in_row("overflow_firings", 0, in_sketch(lambda k: k.update(zeros=k["zeros"] + 1))),
     "overflow_firings", "row 0 'sketch': counts "),
    ("change aggregate of 4", in_row("change_agg", 0, lambda r: r[1].pop()), "change_agg", "row 0: is a list of 4"),
    ("change aggregate count 0", in_row("change_agg", 0, lambda r: r[1].__setitem__(0, 0)),
     "change_agg", "is 0, less than 1"),
    ("change aggregate attr", in_row("change_agg", 0, key_value(4, 99)),
     "change_agg", "attribute index 99 is out of range"),
    ("change aggregate callback", in_row("change_agg", 0, key_value(3, -1)), "change_agg", "callback index -1"),
    # meta
    ("meta not an object", setting("meta", [1]), "meta", "is a list of 1, not an object"),
    ("meta rank not an int", lambda o: o["meta"].update(rank="zero"), "meta", "entry 'rank': is 'zero'"),
    ("meta negative origin", lambda o: o["meta"].update(perf_origin_ns=-1),
     "meta", "entry 'perf_origin_ns': is -1, negative"),
    ("meta world size 0", lambda o: o["meta"].update(world_size=0), "meta", "entry 'world_size': is 0, less than 1"),
    ("meta host not a string", lambda o: o["meta"].update(host=5), "meta", "entry 'host': is 5"),
    ("meta selected loop", lambda o: o["meta"].update(selected_loops=[0, 9]), "meta",
     "loop index 9 is out of range (the trace has {loops} loops)"),
    # types right, numbers lying: times that run backwards, parents that do not enclose, totals past int64
    ("firing ends before it starts", record("firings", NF, 2, F_END, lambda o: firing_value(2, F_START)(o) - 1),
     "firings", "record 2: end time "),
    ("firing device end before start", lambda o: (record("firings", NF, 3, F_DEV_START, 10)(o),
                                                  record("firings", NF, 3, F_DEV_END, 5)(o)),
     "firings", "record 3: device end time 5 is before its device start time 10"),
    ("firing its own parent", record("firings", NF, 0, F_PARENT, 0),
     "firings", "record 0: parent firing index 0 is not an earlier firing's"),
    ("firing parent later", record("firings", NF, 0, F_PARENT, 1),
     "firings", "record 0: parent firing index 1 is not an earlier firing's"),
    ("firing outside its parent", record("firings", NF, 1, F_PARENT, 0),
     "firings", "record 1: its times"),
    ("firings overlap", record("firings", NF, 1, F_START, lambda o: firing_value(0, F_END)(o) - 1),
     "firings", "of firing 0, the one before it at its level"),
    ("call ends past int64", record("calls", NC, 0, C_DUR, 2**63 - 1),
     "calls", "record 0: start time"),
    ("calls of INT64_MAX", call_durations(0, 2**63 - 1), "calls", "durations add up to 1"),
    ("firing aggregates past int64", in_row("overflow_firings", 0, agg_value("total", 2**63 - 1)),
     "overflow_firings", "durations add up to"),
    ("call aggregates past int64", every_row("overflow_calls", agg_value("total", 2**62)),
     "overflow_calls", "durations add up to"),
    ("work aggregates past int64", every_row("overflow_work", agg_value("total", 2**62)),
     "overflow_work", "durations add up to"),
    ("wait totals past int64", every_row("wait_agg", lambda r: r[1].__setitem__(2, 2**62)),
     "wait_agg", "durations add up to"),
    ("callback order NaN", lambda o: o["callbacks"][0].update(order=float("nan")),
     "callbacks", "entry 0 'order': is nan, not a finite number"),
    ("callback order infinite", lambda o: o["callbacks"][1].update(order=float("-inf")),
     "callbacks", "entry 1 'order': is -inf, not a finite number"),
    ("loop ends before it starts", in_span(1, 1, lambda span: span[0] - 1),
     "loop_spans", "entry 1: end time "),
    ("loop its own parent", in_span(0, 2, 0), "loop_spans", "entry 0: parent loop index 0 is not an earlier loop's"),
    ("loop parent later", in_span(0, 2, 1), "loop_spans", "entry 0: parent loop index 1 is not an earlier loop's"),
    ("outermost loops overlap", copies_of_loop(0, 999), "loop_spans", "outermost loops cannot overlap"),
    ("framework too long", setting("framework", "x" * (MAX_NAME + 1)),
     "framework", f"is a string of {MAX_NAME + 1:,} characters"),
    ("event name too long", at("events", 0, "e" * 2 * MAX_NAME), "events", "entry 0: is a string of"),
    ("callback class too long", lambda o: o["callbacks"][0].update(cls="C" * (MAX_NAME + 1)),
     "callbacks", "entry 0 'cls': is a string of"),
]


@pytest.mark.parametrize("change, field, says", [case[1:] for case in CORPUS], ids=[case[0] for case in CORPUS])
def test_a_broken_field_is_refused_naming_the_file_and_the_field(real, tmp_path, change, field, says):
    obj = copy.deepcopy(real)
    change(obj)
    sizes = {name: len(real[name]) for name in ("events", "callbacks", "loops", "attrs", "data_steps")}
    says = says.format(firings=n_firings(real), **sizes)
    message = refused(save(obj, tmp_path / "bad.json"), f"field {field!r}", says)
    assert "record the trace again" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", [f.name for f in fields(TraceData)])
def test_each_missing_field_is_named(real, tmp_path, name):
    obj = copy.deepcopy(real)
    del obj[name]
    refused(save(obj, tmp_path / "bad.json"), f"lacks the fields {name}")


def _wrong_type(value: Any) -> Any:
    """A JSON value of another type than `value`'s."""
    if isinstance(value, bool):
        return "yes"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {"0": value}
    return [value]


@pytest.mark.parametrize("name", [f.name for f in fields(TraceData)])
def test_each_field_of_the_wrong_type_is_named(real, tmp_path, name):
    obj = copy.deepcopy(real)
    obj[name] = _wrong_type(obj[name])
    refused(save(obj, tmp_path / "bad.json"), f"field {name!r}: is ")


def test_every_field_has_a_check():
    assert set(JSON_CHECKS) == {f.name for f in fields(TraceData)}


@pytest.mark.parametrize("change, says", [
    (lambda o: o.update(version="3"), "version '3' is not supported"),
    (lambda o: o.update(version=True), "version True is not supported"),
    (lambda o: o.update(version=99), "version 99 is not supported"),
    (lambda o: o.update(format="loopviz-trace-2"), "is not a loopviz trace"),
    (lambda o: o.update(call_fields=["firing"]), "different record fields"),
])
def test_the_header_is_checked(real, tmp_path, change, says):
    obj = copy.deepcopy(real)
    change(obj)
    refused(save(obj, tmp_path / "bad.json"), says)


def test_not_an_object_is_not_a_trace(tmp_path):
    refused(save([1, 2], tmp_path / "list.json"), "is not a loopviz trace")
    refused(save(None, tmp_path / "null.json"), "is not a loopviz trace")


def log2_hist_of(aggregate: dict) -> dict:
    """An aggregate as files before version 5 wrote it: a log2 histogram counting as many durations as its sketch."""
    hist = [0] * HIST_BUCKETS
    hist[0] = aggregate["sketch"]["zeros"]
    hist[20] += sum(count for _, count in aggregate["sketch"]["bins"])  # ~1 ms each: what matters here is the shape
    return {**{k: v for k, v in aggregate.items() if k != "sketch"}, "hist": hist}


def as_version(real: dict, version: int) -> dict:
    """The real trace as an older version wrote it (version 4 or 1)."""
    old = {**copy.deepcopy(real), "version": version}
    for name in ("overflow_firings", "overflow_calls", "overflow_nested", "overflow_work"):
        old[name] = [[key, log2_hist_of(value)] for key, value in old[name]]
    if version == 1:
        for name in ("change_fields", "loop_spans", "no_handler_by_loop", "overflow_nested", "overflow_work",
                     "tracked_waits", "wait_agg"):
            del old[name]
        for name in ("overflow_firings", "overflow_calls", "change_agg"):
            old[name] = [[key[1:], value] for key, value in old[name]]  # version 1: no loop in the key
    return old


def test_older_versions_are_checked_too(real, tmp_path):
    old = as_version(real, 1)
    loaded = Trace.load(save(old, tmp_path / "v1.json"))
    assert len(loaded.loop_spans) == len(loaded.loops) and loaded.meta["spans_from_firings"]
    old["overflow_calls"][0][0].append(0)  # a version-2 key in a version-1 file
    refused(save(old, tmp_path / "v1.json"),
            "field 'overflow_calls' row 0 key: is a list of 5, not a list of 4 integers")


@pytest.mark.parametrize("change, says", [
    (lambda r: r[1].update(hist=r[1]["hist"][:10]),
     f"row 0 'hist': is a list of 10, not a list of {HIST_BUCKETS} counts"),
    (lambda r: r[1]["hist"].__setitem__(3, -1), "row 0 'hist': is -1, negative"),
    (lambda r: r[1]["hist"].__setitem__(3, float("nan")), "row 0 'hist': is nan, not a 64-bit integer"),
    (lambda r: r[1]["hist"].__setitem__(3, r[1]["hist"][3] + 1), "row 0 'hist': counts "),
    (lambda r: r[1].pop("hist"), "row 0: has no 'hist'"),
    (lambda r: r[1].update(sketch={"zeros": 0, "bins": []}, hist=None), "row 0 'hist': is null, not a list of 64"),
])
def test_a_version_4_file_has_its_log2_histograms_checked(real, tmp_path, change, says):
    old = as_version(real, 4)
    assert Trace.load(save(old, tmp_path / "v4.json")).meta["percentiles_from_log2"] is True
    change(old["overflow_nested"][0])
    refused(save(old, tmp_path / "v4.json"), "field 'overflow_nested'", says)


def test_data_not_from_a_file_is_checked_too(real):
    obj = copy.deepcopy(real)
    obj["calls"][C_CALLBACK] = 17
    with pytest.raises(LoopvizError, match=r"^trace data: field 'calls' record 0: callback index 17 is out of range "
                                           r"\(the trace has 5 callbacks\)\. The data is damaged"):
        Trace.from_json(obj)
    with pytest.raises(LoopvizError, match="is not a loopviz trace"):
        Trace.from_json("trace.json")  # type: ignore[arg-type]


def test_the_real_trace_loads_and_round_trips(real, tmp_path):
    back = Trace.load(save(real, tmp_path / "good.json"))
    assert back.to_json() == real
    assert Trace.from_json(copy.deepcopy(real)).to_json() == real


# -- names: found repeated in linear time, cut in every header ---------------------------------------------


def seconds_to_refuse(names: list[str]) -> float:
    """How long the events check takes to find the repeated name in `names`."""
    began = time.perf_counter()
    with pytest.raises(Invalid, match="names 'event_0' twice"):
        JSON_CHECKS["events"](names, "events", 5)
    return time.perf_counter() - began


def test_a_repeated_name_is_found_in_linear_time():
    # a ratio, not a time: 16 times the names take about 16 times as long (256 times when quadratic). The least of
    # 5 interleaved runs each, without garbage collection, and a bound of 64 leave room for a loaded machine.
    small, large = ([f"event_{i}" for i in range(n)] + ["event_0"] for n in (2_000, 32_000))
    gc.disable()
    try:
        times = [(seconds_to_refuse(small), seconds_to_refuse(large)) for _ in range(5)]
    finally:
        gc.enable()
    assert min(t[1] for t in times) / min(t[0] for t in times) < 64


def test_long_names_are_cut_in_the_headers_of_the_text_and_html_reports(real):
    t = Trace.from_json(copy.deepcopy(real))
    huge = "fastai " + "x" * 2_000_000  # in memory: a file may not hold a name this long
    t.data = replace(t.data, framework=huge, clock="c" * 50_000, loops=["L" * 50_000, *t.data.loops[1:]])
    text = str(t)
    header = html_report(t).split("<header>")[1].split("</header>")[0]
    for letter in "xcL":
        assert letter * NAME_LIMIT not in header and letter * (NAME_LIMIT - 10) + "…" in header, letter
        assert letter * NAME_LIMIT not in text.replace("\n", ""), letter  # (the text is wrapped to the terminal)
    assert text.startswith("Trace of fastai") and len(text) < 30_000


# -- what is read, and how much -----------------------------------------------------------------------


def gzip_members(*parts: bytes) -> bytes:
    return b"".join(gzip.compress(part) for part in parts)


def zeros_gz(path: Path, size: int, level: int = 1) -> Path:
    """A gzip bomb: `size` zero bytes, streamed in 1 MiB chunks."""
    with gzip.GzipFile(path, "wb", compresslevel=level) as out:
        for start in range(0, size, MiB):
            out.write(bytes(min(MiB, size - start)))
    return path


def test_a_gzip_bomb_is_refused_before_it_is_kept(tmp_path):
    bomb = zeros_gz(tmp_path / "bomb.json.gz", 64 * MiB)
    assert bomb.stat().st_size < MiB
    tracemalloc.start()
    try:
        message = refused(bomb, "decompresses to more JSON than the 4,194,304 bytes",
                          "LOOPVIZ_MAX_TRACE_JSON_BYTES=8388608", "Trace.load(path, max_json_bytes=8388608)",
                          max_json_bytes=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, peak  # the decompressed data was counted, never kept
    assert "If you trust the file, raise the limit" in message


# The child's peak resident memory (MiB). On Linux ru_maxrss keeps the parent's peak across fork and exec (pytest's,
# with torch loaded), so the new program's own high-water mark is read from /proc instead.
PEAK_MIB = """
import os, resource
if os.path.exists('/proc/self/status'):
    hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))
    print(int(hwm.split()[1]) // 1024)
else:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 2**20)  # bytes on macOS
"""


def test_the_real_gzip_bomb_with_default_limits_costs_little_memory(tmp_path):
    """1 GiB of zeros, about 1 MB gzipped: refused in a child process whose peak memory stays small."""
    bomb = zeros_gz(tmp_path / "bomb.json.gz", 1024 * MiB)
    code = ("import sys\nfrom loopviz import LoopvizError\nfrom loopviz.trace.trace import Trace\n"
            "try:\n    Trace.load(sys.argv[1])\nexcept LoopvizError as e:\n    print(e)\n" + PEAK_MIB)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPVIZ_MAX_TRACE")}
    done = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    message, peak_mib = done.stdout.strip().splitlines()
    assert "decompresses to more JSON than the 536,870,912 bytes" in message
    assert int(peak_mib) < 300, peak_mib


def test_the_bytes_read_from_disk_are_limited(real, tmp_path):
    path = save(real, tmp_path / "t.json")
    size = path.stat().st_size
    refused(path, f"is {size:,} bytes, more than the 1,000 bytes", "LOOPVIZ_MAX_TRACE_BYTES=1048576", max_bytes=1000)
    refused(path, f"is {size:,} bytes of JSON, more than the 1,000 bytes", "max_json_bytes=", max_json_bytes=1000)
    assert Trace.load(path, max_bytes=size, max_json_bytes=size).n_firings == n_firings(real)


def test_the_environment_sets_the_limits(real, tmp_path, monkeypatch):
    path = save(real, tmp_path / "t.json")
    gz = tmp_path / "t.json.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    monkeypatch.setenv("LOOPVIZ_MAX_TRACE_BYTES", "1000")
    refused(path, "more than the 1,000 bytes", "LOOPVIZ_MAX_TRACE_BYTES=")
    assert Trace.load(path, max_bytes=10**9).n_calls  # a keyword overrides the environment
    monkeypatch.setenv("LOOPVIZ_MAX_TRACE_BYTES", str(10**9))
    monkeypatch.setenv("LOOPVIZ_MAX_TRACE_JSON_BYTES", "2000")
    refused(gz, "decompresses to more JSON than the 2,000 bytes")
    monkeypatch.setenv("LOOPVIZ_MAX_TRACE_JSON_BYTES", "lots")
    with pytest.raises(LoopvizError, match="LOOPVIZ_MAX_TRACE_JSON_BYTES='lots' is not a number of bytes"):
        Trace.load(gz)
    monkeypatch.delenv("LOOPVIZ_MAX_TRACE_JSON_BYTES")
    monkeypatch.setattr(files, "MAX_JSON_BYTES", 3000)  # the module default
    refused(gz, "more JSON than the 3,000 bytes")


@pytest.mark.parametrize("limits, says", [({"max_bytes": -1}, "max_bytes must be 0 or more, not -1"),
                                          ({"max_json_bytes": "1"}, "max_json_bytes must be an integer, not str '1'"),
                                          ({"max_bytes": 1.5}, "max_bytes must be an integer, not float 1.5")])
def test_bad_limits_are_refused(real, tmp_path, limits, says):
    with pytest.raises(LoopvizError, match=says):
        Trace.load(save(real, tmp_path / "t.json"), **limits)


def test_gzip_members_and_padding_load_as_gzip_reads_them(real, tmp_path):
    text = json.dumps(real).encode()
    path = tmp_path / "t.json.gz"
    for raw in (gzip_members(text[:1000], text[1000:]), gzip.compress(text) + bytes(100)):
        path.write_bytes(raw)
        assert Trace.load(path).to_json() == real


@pytest.mark.parametrize("damage, says", [
    (lambda raw: raw[: len(raw) // 2], "is cut short: its gzip stream ends early"),
    (lambda raw: raw[:-3], "is cut short"),
    (lambda raw: raw[:2], "is cut short"),
    (lambda raw: raw + b"trailing", "has data after the end of its gzip stream"),
    (lambda raw: raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:], "is a damaged gzip file"),  # the CRC
    (lambda raw: raw[:20] + bytes(len(raw) - 20), "is a damaged gzip file"),
])
def test_damaged_gzip_is_refused(real, tmp_path, damage, says):
    path = tmp_path / "t.json.gz"
    path.write_bytes(damage(gzip.compress(json.dumps(real).encode())))
    refused(path, says)


@pytest.mark.parametrize("content, says", [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b'{"format": "\xff\xfe"}', "not UTF-8 text: byte 12 is invalid"),
    (b"[" * 100_000 + b"]" * 100_000, "its JSON nests too deep to read"),
    (b'{"format": "loopviz-trace", "version": 3, "dropped_calls": 1' + b"0" * 100_000 + b"}",
     "holds an integer of more than 4,300 digits"),
    (gzip.compress(b"[" * 100_000), "its JSON nests too deep"),
    (gzip.compress(b"\x00" * 1000), "not JSON"),
])
def test_what_is_not_json_is_refused(tmp_path, content, says):
    path = tmp_path / "t.json"
    path.write_bytes(content)
    refused(path, "is not a loopviz trace", says)


def test_deep_json_cannot_crash_a_raised_recursion_limit(tmp_path):
    """With the recursion limit raised, json's C parser would overflow the C stack at 100,000 levels."""
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    code = ("import sys\nsys.setrecursionlimit(1_000_000)\nfrom loopviz import LoopvizError\n"
            "from loopviz.trace.trace import Trace\ntry:\n    Trace.load(sys.argv[1])\nexcept LoopvizError as e:\n"
            "    print(e)\nprint(sys.getrecursionlimit())")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "nests too deep" in done.stdout and done.stdout.split()[-1] == "1000000"


def test_only_regular_files_are_opened(tmp_path):
    refused(tmp_path, "is a directory, not a trace file")
    refused(tmp_path / "missing.json", "no trace file at")
    refused("/dev/zero", "is a device, not a trace file")
    (tmp_path / "link.json").symlink_to("/dev/zero")
    refused(tmp_path / "link.json", "is a device")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO blocks until a writer comes: a child process, with a timeout, proves nothing waits."""
    fifo = tmp_path / "trace.json"
    os.mkfifo(fifo)
    code = ("import sys\nfrom loopviz import LoopvizError\nfrom loopviz.trace.trace import Trace\n"
            "try:\n    Trace.load(sys.argv[1])\nexcept LoopvizError as e:\n    print(e)")
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert f"{str(fifo)!r} is a FIFO (named pipe), not a trace file" in done.stdout, done.stderr


def test_an_unreadable_file_is_refused(real, tmp_path, monkeypatch):
    path = save(real, tmp_path / "t.json")

    def denied(*args: Any, **kwargs: Any) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)  # as root, chmod 000 would not stop the read
    refused(path, "cannot read", "permission denied")


@pytest.mark.parametrize("path", [123, None, b"t.json", ["t.json"]])
def test_load_needs_a_path(path):
    with pytest.raises(LoopvizError, match=r"^path must be a file name \(a str or pathlib.Path\), not (None|\w+ )"):
        Trace.load(path)


# -- merge's arguments ---------------------------------------------------------------------------------


def test_merge_needs_a_list_of_paths_or_traces(real, tmp_path):
    path = save(real, tmp_path / "t.json")
    for one in (str(path), path, Trace.from_json(copy.deepcopy(real))):
        with pytest.raises(LoopvizError, match=r"^sources must be a list of traces .*, not one (path|Trace)"):
            merge(one)
    with pytest.raises(LoopvizError, match="not int 5"):
        merge(5)
    with pytest.raises(LoopvizError, match=r"^sources\[1\] must be a path or a Trace, not int 7\.$"):
        merge([path, 7])
    with pytest.raises(LoopvizError, match="at least one trace"):
        merge([])
    bad = copy.deepcopy(real)
    bad["events"] = [1]
    with pytest.raises(LoopvizError, match=r"'.*bad.json': field 'events' entry 0"):
        merge([path, save(bad, tmp_path / "bad.json")])
    assert merge([path]).ranks == [0]


# -- the CLI ---------------------------------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_says_what_is_wrong_with_a_file_in_one_line(real, tmp_path):
    good = save(real, tmp_path / "good.json")
    broken = copy.deepcopy(real)
    del broken["events"]
    bad = save(broken, tmp_path / "bad.json")
    bomb = zeros_gz(tmp_path / "bomb.json.gz", 8 * MiB)
    cases = [(["report", str(bad)], "", bad, "lacks the fields events"),
             (["diff", str(good), str(bad)], "AFTER: ", bad, "lacks the fields events"),
             (["diff", str(bad), str(good)], "BEFORE: ", bad, "lacks the fields events"),
             (["report", str(good), str(bad)], "", bad, "lacks the fields events"),
             (["report", "/dev/zero"], "", "/dev/zero", "is a device")]
    for args, which, named, says in cases:
        code, out, err = run(*args)
        assert code == 1 and out == "", (args, code, out)
        assert err.startswith(f"loopviz: {which}{str(named)!r}") and says in err and err.count("\n") == 1, (args, err)
    code, _, err = run("report", str(bomb), env={"LOOPVIZ_MAX_TRACE_JSON_BYTES": str(MiB)})
    assert code == 1 and "decompresses to more JSON than the 1,048,576 bytes" in err and "Traceback" not in err
    assert run("report", str(good))[0] == 0


# -- fuzzing: any change to a real trace loads and reports, or is refused clearly ---------------------------


INTS = st.one_of(st.integers(-3, 60), st.sampled_from([2**31, 2**62, 2**63 - 1, 2**63, -2**63, -2**63 - 1, 10**30]),
                 st.integers())
LEAVES = st.one_of(st.none(), st.booleans(), INTS, st.floats(), st.text(max_size=4))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner,
                                                                                          max_size=4), max_leaves=8)


def mutate(data: st.DataObject, obj: dict) -> None:
    """Change one place in the JSON: walk down from a random field, then replace, drop, add or cut."""
    parent: Any = obj
    key: Any = data.draw(st.sampled_from(sorted(obj)), label="field")
    while isinstance(parent[key], (list, dict)) and parent[key] and data.draw(st.booleans(), label="deeper"):
        node = parent[key]
        parent, key = node, (data.draw(st.integers(0, len(node) - 1)) if isinstance(node, list)
                             else data.draw(st.sampled_from(sorted(node))))
    action = data.draw(st.sampled_from(["replace", "replace", "int", "drop", "cut", "append"]), label="action")
    if action == "replace":
        parent[key] = data.draw(VALUES, label="value")
    elif action == "int":
        parent[key] = data.draw(INTS, label="int")
    elif action == "drop":
        del parent[key]
    elif action == "cut" and isinstance(parent[key], list):
        parent[key] = parent[key][: data.draw(st.integers(0, len(parent[key])), label="length")]
    elif action == "append" and isinstance(parent[key], list):
        parent[key].append(data.draw(INTS | VALUES, label="appended"))


def every_report(t: Trace, folder: Path) -> None:
    """Every report, display and export a loaded trace offers; only a LoopvizError may come out."""
    for report in (t.summary, t.by_callback, t.to_df, t.firings_df, t.calls_df, t.work_df, t.loops_df, t.total_ns,
                   t.notes, lambda: str(t), lambda: t.to_chrome(folder / "c.json"), lambda: t.select([0]).summary(),
                   lambda: Trace.from_json(t.to_json()), lambda: merge([t]).chrome()):
        report()
    try:
        t.changes()
        t.who_changed("lr")
    except LoopvizError:  # no state changes recorded, or none of lr
        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_a_changed_trace_loads_and_reports_or_is_refused(real, tmp_path_factory, data):
    obj = copy.deepcopy(real)
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        mutate(data, obj)
    try:
        t = Trace.from_json(obj)
    except LoopvizError as e:
        assert type(e) is LoopvizError and "trace data" in str(e)
        return
    every_report(t, tmp_path_factory.mktemp("fuzz"))


def test_a_trace_of_a_callback_with_a_lone_surrogate_round_trips(tmp_path):
    """A class's module and qualified name may hold any str, a lone surrogate too: the trace saves and loads them,
    and every view shows names escaped."""
    from fastai.callback.core import Callback

    Odd = type("Odd\x1b[2J", (Callback,), {"after_batch": lambda self: None})
    Odd.__module__, Odd.__qualname__ = "mod\ud800", "Odd\ud800"
    learn = synth_learner(cbs=[Odd()])
    with learn.trace() as t:
        learn.fit(1)
    loaded = Trace.load(t.save(tmp_path / "odd.json"))
    odd = [cb for cb in loaded.callbacks if cb["cls"].startswith("Odd")]
    assert odd and odd[0]["module"] == "mod\ud800"
    assert "Odd\x1b[2J" in set(loaded.by_callback()["callback"])
    assert "\x1b" not in str(loaded)
    result = CliRunner().invoke(cli, ["report", "-f", "csv", str(tmp_path / "odd.json"), "-o", str(tmp_path / "odd.csv")])
    assert result.exit_code == 0, result.output
    assert "Odd\x1b[2J" in (tmp_path / "odd.csv").read_text(encoding="utf-8")  # a file keeps the true name


def test_an_interrupted_save_leaves_no_file_behind(real, tmp_path, monkeypatch):
    """A save cut short (Ctrl-C while writing) leaves neither a truncated trace nor a partial file."""
    trace = Trace.from_json(real)
    target = tmp_path / "t.json"

    open_fd = os.fdopen

    class CutShort:
        """The file being written: it takes half of what is written to it, then Ctrl-C comes."""

        def __init__(self, fd: int, *_: Any) -> None:
            self.file = open_fd(fd, "wb")

        def __enter__(self) -> CutShort:
            return self

        def __exit__(self, *_: Any) -> None:
            self.file.close()

        def write(self, data: bytes) -> None:
            self.file.write(data[: len(data) // 2])
            self.file.flush()
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", CutShort)
    with pytest.raises(KeyboardInterrupt):
        trace.save(target)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    assert Trace.load(trace.save(target)).n_firings == trace.n_firings
