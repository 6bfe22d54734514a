"""Trace data checked before anything reads it: every field's type and shape, every index in range.

A trace file can come from anywhere, and the reports index lists and arrays with the numbers in it.
`check_json` checks each field's JSON value before its codec decodes it; `check_data` checks the decoded
records and aggregates against the names they point at, and their numbers against what can be true (times
that do not run backwards, parents that enclose their children, outermost loops that do not overlap, durations
whose sums fit in int64, so no report shows a negative total or a wrapped sum). Both raise `Invalid`, which
`loopviz.trace.files` turns into a LoopvizError naming the file and the field. Record matrices are checked a
column at a time with numpy (min/max, comparisons, one sort of the firings by parent), so a trace of a million
callback calls is checked in a fraction of a second.
"""
from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING, Any, Callable

from loopviz.trace.data import COARSE_PERCENTILES, HIST_BUCKETS, TraceData, is_outermost
from loopviz.trace.datawork import D_COUNT, D_END, D_PASS, D_PID, D_START, D_STEP, D_TOTAL, D_WORKER, DATA_FIELDS, ND
from loopviz.trace.layout import (
    C_CALLBACK, C_DUR, C_FIRING, C_START, C_STATUS, CALL_FIELDS, CH_ATTR, CH_CALLBACK, CH_FIRING, CHANGE_FIELDS,
    F_DEV_END, F_DEV_START, F_END, F_EVENT, F_LOOP, F_MODE, F_PARENT, F_START, F_STATUS, FIRING_FIELDS, MODES,
    NCH, STATUS,
)
from loopviz.trace.sketch import MAX_KEY

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Invalid", "JSON_CHECKS", "check_json", "check_data", "bad_records"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The longest name (event, loop, callback, attribute, framework, clock...) a file may hold: far past any real one,
# short enough that no view spends long on it (each view cuts names to NAME_LIMIT characters anyway).
MAX_NAME = 10_000
RECORDS = {"firings": FIRING_FIELDS, "calls": CALL_FIELDS, "change_log": CHANGE_FIELDS, "data_work": DATA_FIELDS}
# meta entries the reports read, and the least each may be
META_INTS = {"pid": 0, "rank": 0, "local_rank": 0, "world_size": 1, "start_unix_ns": 0, "perf_origin_ns": 0,
             "origin_error_ns": 0, "max_calls": 0, "max_firings": 0}


class Invalid(Exception):
    """One thing wrong with trace data: the field, where in it, and what."""

    def __init__(self, field: str, detail: str, at: str = "") -> None:
        super().__init__(field, detail, at)
        self.field, self.detail, self.at = field, detail, at

    def message(self, where: str, from_file: bool) -> str:
        """The error message: where the data came from, the field, what is wrong and what to do."""
        at = f" {self.at}" if self.at else ""
        advice = ("The file is damaged or was not written by loopviz's Trace.save: record the trace again." if from_file
                  else "The data is damaged or did not come from Trace.to_json().")
        return f"{where}: field {self.field!r}{at}: {self.detail}. {advice}"


# -- values -------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A JSON value, short, for a message."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        digits = round(value.bit_length() * 0.30103)  # log10(2)
        return str(value) if abs(value) < 10**24 else f"an integer of about {digits} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(value: Any, field: str, at: str = "", low: int = INT64_MIN) -> None:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise Invalid(field, f"is {_show(value)}, not a 64-bit integer", at)
    if value < low:
        raise Invalid(field, f"is {value}, {'negative' if low == 0 else f'less than {low}'}", at)


def _text(value: Any, field: str, at: str = "") -> None:
    # Any str: a name with control characters or a lone surrogate is what a callback class was called, and every
    # view escapes it where it is shown (loopviz.renderers.sanitise).
    if type(value) is not str:
        raise Invalid(field, f"is {_show(value)}, not a string", at)
    if len(value) > MAX_NAME:
        raise Invalid(field, f"is a string of {len(value):,} characters; names are at most {MAX_NAME:,}", at)


def _list(value: Any, field: str, at: str = "", length: int | None = None, what: str = "a list") -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise Invalid(field, f"is {_show(value)}, not {what}", at)
    return value


def _entries(value: Any, field: str) -> list[tuple[str, Any]]:
    """(where, entry) for each entry of a list field."""
    return [(f"entry {i}", entry) for i, entry in enumerate(_list(value, field))]


# -- fields, as JSON ----------------------------------------------------------------------------

Check = Callable[[Any, str, int], None]  # (value, field, file version)


def _string(value: Any, field: str, version: int) -> None:
    _text(value, field)


def _flag(value: Any, field: str, version: int) -> None:
    if type(value) is not bool:
        raise Invalid(field, f"is {_show(value)}, not true or false")


def _count(value: Any, field: str, version: int) -> None:
    _int(value, field, low=0)


def _counts(value: Any, field: str, version: int) -> None:
    for at, entry in _entries(value, field):
        _int(entry, field, at, low=0)


def _records(value: Any, field: str, version: int) -> None:
    _list(value, field, what="a list of integers")  # its integers are checked as it is decoded (bad_records)


def _names(unique: bool) -> Check:
    def check(value: Any, field: str, version: int) -> None:
        for at, entry in _entries(value, field):
            _text(entry, field, at)
        if unique and len(set(value)) != len(value):
            raise Invalid(field, f"names {_first_repeated(value)!r} twice; each name must be listed once")
    return check


def _first_repeated(names: list[str]) -> str:
    """The first name in `names` that an earlier one repeats (linear: a set of those seen)."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    raise ValueError("no name is repeated")


def _callbacks(value: Any, field: str, version: int) -> None:
    for at, entry in _entries(value, field):
        if type(entry) is not dict:
            raise Invalid(field, f"is {_show(entry)}, not an object with cls, name, module and order", at)
        for key in ("cls", "name", "module", "order"):
            if key not in entry:
                raise Invalid(field, f"has no {key!r}", at)
        for key in ("cls", "name", "module"):
            _text(entry[key], field, f"{at} {key!r}")
        order = entry["order"]
        if order is not None and type(order) not in (int, float):  # getattr(cb, 'order', 0)
            raise Invalid(field, f"is {_show(order)}, not a number", f"{at} 'order'")
        if type(order) is float and not math.isfinite(order):  # JSON has no NaN: a chrome trace could not hold it
            raise Invalid(field, f"is {_show(order)}, not a finite number", f"{at} 'order'")


_PERS = ("item", "batch", "pass")


def _data_steps(value: Any, field: str, version: int) -> None:
    for i, entry in enumerate(_list(value, field)):
        at = f"entry {i}"
        for text in _list(entry, field, at, 4, "a list of 4 strings (loader, stage, step, per)"):
            _text(text, field, at)
        if entry[3] not in _PERS:
            raise Invalid(field, f"per is {_show(entry[3])}, not one of {', '.join(_PERS)}", at)


def _spans(value: Any, field: str, version: int) -> None:
    lows = (-1, -1, -1, -2, -1, -1)  # start, end, parent loop, parent firing (-2: past the cap), first, last
    for at, entry in _entries(value, field):
        for number, low in zip(_list(entry, field, at, 6, "a list of 6 integers"), lows):
            _int(number, field, at, low)


def _meta(value: Any, field: str, version: int) -> None:
    if type(value) is not dict:
        raise Invalid(field, f"is {_show(value)}, not an object")
    for key, low in META_INTS.items():
        if key in value:
            _int(value[key], field, f"entry {key!r}", low)
    for key in ("host", "device", "precision"):
        if key in value:
            _text(value[key], field, f"entry {key!r}")
    if COARSE_PERCENTILES in value and type(value[COARSE_PERCENTILES]) is not bool:
        raise Invalid(field, f"is {_show(value[COARSE_PERCENTILES])}, not true or false",
                      f"entry {COARSE_PERCENTILES!r}")
    if "batch_events" in value:
        for name in _list(value["batch_events"], field, "entry 'batch_events'", 2, "a list of 2 event names"):
            _text(name, field, "entry 'batch_events'")
    if "cpus" in value:
        _int(value["cpus"], field, "entry 'cpus'", 1)
    if "loaders" in value:
        _loaders(value["loaders"], field)
    if "advice" in value:
        _advice(value["advice"], field)
    if "tracing_cost" in value:
        _tracing_cost(value["tracing_cost"], field)
    if "selected_loops" in value:
        for number in _list(value["selected_loops"], field, "entry 'selected_loops'"):
            _int(number, field, "entry 'selected_loops'", 0)


def _loaders(value: Any, field: str) -> None:
    """meta['loaders']: per loader ('train', 'valid'), its settings as non-negative integers or true/false."""
    if type(value) is not dict:
        raise Invalid(field, f"is {_show(value)}, not an object", "entry 'loaders'")
    for name, settings in value.items():
        at = f"entry 'loaders', {_show(name)}"
        if type(settings) is not dict:
            raise Invalid(field, f"is {_show(settings)}, not an object", at)
        for key, setting in settings.items():
            if type(setting) is not bool:
                _int(setting, field, f"{at}, {_show(key)}", 0)


_COST_FIGURES = ("per_firing_ns", "per_call_ns", "per_event_ns", "per_handler_ns", "batches", "rounds")
_COST_NEEDED = ("per_firing_ns", "per_call_ns")


def _tracing_cost(value: Any, field: str) -> None:
    """meta['tracing_cost'] (`loopviz.trace.cost`): what recording added per firing and per call, in ns (finite, not
    negative), or why it was not measured."""
    at = "entry 'tracing_cost'"
    if type(value) is not dict:
        raise Invalid(field, f"is {_show(value)}, not an object", at)
    if "unmeasured" in value:
        _text(value["unmeasured"], field, f"{at}, 'unmeasured'")
        return
    for key in _COST_FIGURES:
        if key not in value and key not in _COST_NEEDED:
            continue
        figure = value.get(key)
        if type(figure) not in (int, float) or not math.isfinite(figure) or figure < 0:
            raise Invalid(field, f"is {_show(figure)}, not a finite number of 0 or more", f"{at}, {key!r}")


# meta['advice'] (what a diagnosis says in the framework's words, loopviz.trace.diagnose): its entries' shapes
_ADVICE_TEXTS = ("data_work", "step_work")
_ADVICE_LISTS = ("compute_work", "forward_backward_work", "per_batch_events", "work_events", "model_events",
                 "own_modules")
_ADVICE_TABLES = ("fixes", "own_fixes")


def _advice(value: Any, field: str) -> None:
    """meta['advice']: names, lists of names and tables of texts (other entries are left to later versions)."""
    if type(value) is not dict:
        raise Invalid(field, f"is {_show(value)}, not an object", "entry 'advice'")
    for key in _ADVICE_TEXTS:
        if key in value:
            _text(value[key], field, f"entry 'advice', {key!r}")
    for key in _ADVICE_LISTS:
        if key in value:
            for name in _list(value[key], field, f"entry 'advice', {key!r}"):
                _text(name, field, f"entry 'advice', {key!r}")
    for key in _ADVICE_TABLES:
        if key in value:
            table = value[key]
            if type(table) is not dict:
                raise Invalid(field, f"is {_show(table)}, not an object", f"entry 'advice', {key!r}")
            for text in table.values():
                _text(text, field, f"entry 'advice', {key!r}")


def _work_names(value: Any, field: str, version: int) -> None:
    for at, entry in _entries(value, field):
        for name in _list(entry, field, at, 3, "a list of 3 names [before, after, work]"):
            _text(name, field, at)


def _aggregate(entry: Any, field: str, at: str, version: int) -> None:
    """count, total, min, max, and the durations' sketch (a log2 `hist` before version 5), which counts `count`."""
    spread = "sketch" if version >= 5 else "hist"
    if type(entry) is not dict:
        raise Invalid(field, f"is {_show(entry)}, not an object with count, total, min, max and {spread}", at)
    for key, low in (("count", 1), ("total", 0), ("min", INT64_MIN), ("max", INT64_MIN)):
        if key not in entry:
            raise Invalid(field, f"has no {key!r}", at)
        _int(entry[key], field, f"{at} {key!r}", low)
    if spread not in entry:
        raise Invalid(field, f"has no {spread!r}", at)
    counted = _sketch(entry["sketch"], field, f"{at} 'sketch'") if version >= 5 else _hist(entry["hist"], field, at)
    if counted != entry["count"]:
        raise Invalid(field, f"counts {counted:,} durations, not its count {entry['count']:,}", f"{at} {spread!r}")


def _hist(value: Any, field: str, at: str) -> int:
    """A log2 histogram of HIST_BUCKETS counts (files before version 5); how many durations it counts."""
    for number in _list(value, field, f"{at} 'hist'", HIST_BUCKETS, f"a list of {HIST_BUCKETS} counts"):
        _int(number, field, f"{at} 'hist'", 0)
    return sum(value)


def _sketch(value: Any, field: str, at: str) -> int:
    """A sketch's JSON: {'zeros': n, 'bins': [[key, count], ...]}, keys increasing within [0, MAX_KEY], counts of
    1 or more; how many durations it counts."""
    if type(value) is not dict:
        raise Invalid(field, f"is {_show(value)}, not an object with zeros and bins", at)
    for key in ("zeros", "bins"):
        if key not in value:
            raise Invalid(field, f"has no {key!r}", at)
    _int(value["zeros"], field, f"{at} 'zeros'", 0)
    counted, previous = value["zeros"], -1
    for i, pair in enumerate(_list(value["bins"], field, f"{at} 'bins'")):
        where = f"{at} bin {i}"
        key, count = _list(pair, field, where, 2, "a [key, count] pair")
        _int(key, field, f"{where} key")
        if not 0 <= key <= MAX_KEY:
            raise Invalid(field, f"key {key} is out of range (0 to {MAX_KEY}: durations of 1 to 2**63 ns)", where)
        if key <= previous:
            raise Invalid(field, f"key {key} follows key {previous}; keys must increase", where)
        _int(count, field, f"{where} count", 1)
        counted, previous = counted + count, key
    return counted


def _change(entry: Any, field: str, at: str, version: int) -> None:
    values = _list(entry, field, at, 5, "a list of 5 integers [count, first epoch, first iter, last epoch, last iter]")
    for number, low in zip(values, (1, INT64_MIN, INT64_MIN, INT64_MIN, INT64_MIN)):
        _int(number, field, at, low)


def _wait(entry: Any, field: str, at: str, version: int) -> None:
    values = _list(entry, field, at, 5, "a list [calls, synchronisations, total ns, longest ns, site]")
    for number, low in zip(values, (1, 1, 0, 0)):
        _int(number, field, at, low)
    _text(values[4], field, at)


def _keyed(arity: int, check_value: Callable[[Any, str, str, int], None]) -> Check:
    """A dict written as [[key...], value] rows; keys of `arity` integers (one fewer in version 1: no loop)."""
    def check(value: Any, field: str, version: int) -> None:
        size = arity - 1 if version == 1 else arity
        for i, row in enumerate(_list(value, field)):
            at = f"row {i}"
            key, entry = _list(row, field, at, 2, "a [key, value] pair")
            for number in _list(key, field, f"{at} key", size, f"a list of {size} integers"):
                _int(number, field, f"{at} key")
            check_value(entry, field, at, version)
    return check


JSON_CHECKS: dict[str, Check] = {
    "framework": _string, "clock": _string, "meta": _meta, "events": _names(unique=True), "callbacks": _callbacks,
    "loops": _names(unique=False), "loop_spans": _spans, "firings": _records, "calls": _records,
    "no_handler_calls": _count, "no_handler_by_loop": _counts, "dropped_firings": _count, "dropped_calls": _count,
    "overflow_firings": _keyed(3, _aggregate), "overflow_calls": _keyed(5, _aggregate),
    "overflow_nested": _keyed(3, _aggregate), "overflow_work": _keyed(5, _aggregate), "work_names": _work_names,
    "tracked_changes": _flag, "attrs": _names(unique=False), "change_agg": _keyed(5, _change),
    "change_log": _records, "dropped_changes": _count, "tracked_waits": _flag, "wait_agg": _keyed(5, _wait),
    "data_steps": _data_steps, "data_work": _records,
}


def check_json(obj: dict[str, Any], version: int) -> None:
    """Every field present in `obj` has the JSON type and shape its codec reads (raises Invalid)."""
    for name, check in JSON_CHECKS.items():
        if name in obj:
            check(obj[name], name, version)


def bad_records(field: str, value: list[Any]) -> Invalid:
    """What is wrong with a record array that did not convert to 64-bit integers: its first bad value."""
    layout = RECORDS[field]
    for i, number in enumerate(value):
        if type(number) is not int or not INT64_MIN <= number <= INT64_MAX:
            return Invalid(field, f"{layout[i % len(layout)]} is {_show(number)}, not a 64-bit integer",
                           f"record {i // len(layout)}")
    return Invalid(field, "cannot be read as 64-bit integers")


# -- fields against each other ------------------------------------------------------------------

Bound = tuple[str, int, "int | None", str]  # what, least allowed, first not allowed (None: no limit), why


def _index(what: str, n: int, noun: str, none: bool = False) -> Bound:
    """An index into something the trace has `n` of; -1 also allowed when `none`."""
    why = f"-1 for none, or below {n}: the trace has {n} {noun}" if none else f"the trace has {n} {noun}"
    return what, -1 if none else 0, n, why


def _code(what: str, names: tuple[str, ...]) -> Bound:
    """A code from a fixed table (MODES, STATUS)."""
    codes = ", ".join(f"{i} ({name or 'none'})" for i, name in enumerate(names))
    return what, 0, len(names), f"it must be one of {codes}"


def _at_least(what: str, low: int) -> Bound:
    return what, low, None, "it must be 0 or more" if low == 0 else f"it must be {low} for none, or 0 or more"


def _fail(field: str, bound: Bound, value: int, at: str) -> Invalid:
    return Invalid(field, f"{bound[0]} {value} is out of range ({bound[3]})", at)


def _in(bound: Bound, value: int) -> bool:
    return value >= bound[1] and (bound[2] is None or value < bound[2])


def _columns(field: str, rows: np.ndarray, bounds: dict[int, Bound]) -> None:
    """Each column of an (n, fields) record matrix within its bound: min and max first, the offending record if not."""
    for offset, bound in bounds.items():
        column = rows[:, offset]
        if not len(column) or (column.min() >= bound[1] and (bound[2] is None or column.max() < bound[2])):
            continue
        record = next(i for i, value in enumerate(column.tolist()) if not _in(bound, value))
        raise _fail(field, bound, int(column[record]), f"record {record}")


def _rows(records: Any) -> np.ndarray:
    """Raw records as their int64 matrix: a file's, before they are packed, or packed ones'."""
    return records if not hasattr(records, "matrix") else records.matrix()


def _change_matrix(log: array) -> np.ndarray:
    import numpy as np

    return np.frombuffer(log, np.int64).reshape(-1, NCH) if log else np.zeros((0, NCH), np.int64)


def _keys(field: str, aggregates: dict[tuple[int, ...], Any], bounds: list[Bound]) -> None:
    """Each key's integers within their bounds."""
    for key in aggregates:
        for value, bound in zip(key, bounds):
            if not _in(bound, value):
                raise _fail(field, bound, value, f"key {list(key)}")


def check_data(data: TraceData, spans: bool = True) -> None:
    """Every record a whole row, every index pointing at something the trace has, times and durations not
    negative (raises Invalid). `spans`: check loop_spans too (files before version 3 have none to check)."""
    size = len(data.change_log)
    if size % NCH:
        raise Invalid("change_log", f"holds {size:,} integers, not a whole number of {NCH}-integer records "
                                    f"({', '.join(CHANGE_FIELDS)})")
    events, callbacks, loops, attrs = len(data.events), len(data.callbacks), len(data.loops), len(data.attrs)
    loop, event = _index("loop index", loops, "loops", none=True), _index("event index", events, "events")
    mode, status = _code("mode", MODES), _code("status", STATUS)
    callback = _index("callback index", callbacks, "callbacks")
    firing = _index("firing index", data.n_firings, "firings")
    _columns("firings", _rows(data.firings), {
        F_EVENT: event, F_MODE: mode, F_LOOP: loop, F_STATUS: status,
        F_PARENT: _index("parent firing index", data.n_firings, "firings", none=True),
        F_START: _at_least("start time", 0), F_END: _at_least("end time", 0),
        F_DEV_START: _at_least("device start time", -1), F_DEV_END: _at_least("device end time", -1)})
    _columns("calls", _rows(data.calls), {C_FIRING: firing, C_CALLBACK: callback, C_STATUS: status,
                                       C_START: _at_least("start time", 0), C_DUR: _at_least("duration", 0)})
    _check_firing_times(_rows(data.firings))
    _check_totals(data, _rows(data.firings), _rows(data.calls))
    _columns("change_log", _change_matrix(data.change_log), {CH_FIRING: firing, CH_CALLBACK: callback,
                                                  CH_ATTR: _index("attribute index", attrs, "attributes")})
    maybe_event = _index("event index", events, "events", none=True)  # calls and changes outside any firing
    _keys("overflow_firings", data.overflow_firings, [loop, event, mode])
    _keys("overflow_nested", data.overflow_nested, [loop, event, mode])
    _keys("overflow_calls", data.overflow_calls, [loop, maybe_event, mode, callback, status])
    _keys("overflow_work", data.overflow_work, [loop, event, event, mode, ("nested flag", 0, 2, "it must be 0 or 1")])
    _keys("change_agg", data.change_agg,
          [loop, maybe_event, mode, callback, _index("attribute index", attrs, "attributes")])
    _keys("wait_agg", data.wait_agg, [loop, maybe_event, mode, _index("callback index", callbacks, "callbacks", none=True),
                                         _index("next event index", events, "events", none=True)])
    _check_loops(data, spans)
    _check_data_work(data)


def _check_data_work(data: TraceData) -> None:
    """The data loop's rows: whole, each naming a step the trace has, times and totals not negative."""
    import numpy as np

    size = len(data.data_work)
    if size % ND:
        raise Invalid("data_work", f"holds {size:,} integers, not a whole number of {ND}-integer records "
                                   f"({', '.join(DATA_FIELDS)})")
    rows = np.frombuffer(data.data_work, np.int64).reshape(-1, ND) if size else np.zeros((0, ND), np.int64)
    _columns("data_work", rows, {
        D_STEP: _index("step index", len(data.data_steps), "data steps"), D_PASS: _at_least("pass", 0),
        D_WORKER: _at_least("worker", -1), D_PID: _at_least("pid", 0), D_START: _at_least("start time", 0),
        D_END: _at_least("end time", 0), D_TOTAL: _at_least("total", 0), D_COUNT: _at_least("count", 0)})
    _first("data_work", rows[:, D_END] < rows[:, D_START], lambda i: "its end is before its start")


def _first(field: str, bad: np.ndarray, says: Callable[[int], str]) -> None:
    """Raise Invalid for the first record where `bad` (a boolean per record) holds, saying `says(record)`."""
    if bad.any():
        record = int(bad.argmax())
        raise Invalid(field, says(record), f"record {record}")


def _check_firing_times(rows: np.ndarray) -> None:
    """Each firing ends no earlier than it starts, inside its parent firing, which began before it (the recorder
    writes a firing when it begins), and no earlier than the previous firing of its parent ended."""
    import numpy as np

    start, end, parent = rows[:, F_START], rows[:, F_END], rows[:, F_PARENT]
    _first("firings", end < start, lambda i: f"end time {end[i]} is before its start time {start[i]}")
    dev_start, dev_end = rows[:, F_DEV_START], rows[:, F_DEV_END]
    _first("firings", (dev_start >= 0) & (dev_end >= 0) & (dev_end < dev_start),
           lambda i: f"device end time {dev_end[i]} is before its device start time {dev_start[i]}")
    _first("firings", parent >= np.arange(len(rows)),
           lambda i: f"parent firing index {parent[i]} is not an earlier firing's (a parent begins before its "
                     "children)")
    of = np.maximum(parent, 0)
    _first("firings", (parent >= 0) & ((start < start[of]) | (end > end[of])),
           lambda i: f"its times {start[i]} to {end[i]} are not inside those of its parent firing {parent[i]} "
                     f"({start[parent[i]]} to {end[parent[i]]})")
    order = np.lexsort((np.arange(len(rows)), parent))  # by parent, then in the order they began
    before, after = order[:-1], order[1:]
    overlap = (parent[before] == parent[after]) & (start[after] < end[before])
    if overlap.any():
        first = int(overlap.argmax())
        i, previous = int(after[first]), int(before[first])
        raise Invalid("firings", f"start time {start[i]} is before the end time {end[previous]} of firing {previous}, "
                                 "the one before it at its level", f"record {i}")


def _exact_sum(column: np.ndarray) -> int:
    """The sum of a column of integers of 0 or more, in Python integers where int64 could wrap around."""
    if not len(column):
        return 0
    if int(column.max()) <= INT64_MAX // len(column):
        return int(column.sum())
    return sum(column.tolist())


def _aggregate_total(field: str, aggregates: dict[tuple[int, ...], Any]) -> int:
    return sum(entry[2] if field == "wait_agg" else entry.total for entry in aggregates.values())


def _check_totals(data: TraceData, firings: np.ndarray, calls: np.ndarray) -> None:
    """The durations of each kind of record, added up with their aggregates past the cap, fit in 64 bits: every
    report sums them as int64 (numpy, pandas), which would wrap around to a negative total."""
    over = calls[:, C_START] > INT64_MAX - calls[:, C_DUR]
    _first("calls", over, lambda i: f"start time {calls[i, C_START]} plus duration {calls[i, C_DUR]} is past 2**63 ns")
    kinds = [("firings", _exact_sum(firings[:, F_END] - firings[:, F_START]), ("overflow_firings", "overflow_nested")),
             ("calls", _exact_sum(calls[:, C_DUR]), ("overflow_calls",)), ("", 0, ("overflow_work",)),
             ("", 0, ("wait_agg",))]
    for records, total, aggregates in kinds:
        for field in ([records] if records else []) + list(aggregates):
            total += _aggregate_total(field, getattr(data, field)) if field in aggregates else 0
            if total > INT64_MAX:
                raise Invalid(field, f"durations add up to {_show(total)} ns, past the 2**63 - 1 ns (292 years) a "
                                     "report can total")


def _check_loops(data: TraceData, spans: bool) -> None:
    """Per-loop lists one entry per loop, and the loops they name among the trace's."""
    loops = len(data.loops)
    if spans and len(data.loop_spans) != loops:
        raise Invalid("loop_spans", f"has {len(data.loop_spans)} entries for {loops} loops; it must have one per loop")
    parent = _index("parent loop index", loops, "loops", none=True)
    for i, span in enumerate(data.loop_spans if spans else []):
        if not _in(parent, span[2]):
            raise _fail("loop_spans", parent, span[2], f"entry {i}")
        if span[2] >= i:
            raise Invalid("loop_spans", f"parent loop index {span[2]} is not an earlier loop's (a loop begins "
                                        "before the loops inside it)", f"entry {i}")
        if span[1] != -1 and span[1] < span[0]:
            raise Invalid("loop_spans", f"end time {span[1]} is before its start time {span[0]}", f"entry {i}")
    if spans:
        _check_outermost(data.loop_spans)
    if len(data.no_handler_by_loop) not in (0, loops):
        raise Invalid("no_handler_by_loop", f"has {len(data.no_handler_by_loop)} entries for {loops} loops; it must "
                                            "have one per loop (or none)")
    selected = _index("loop index", loops, "loops")
    for value in data.meta.get("selected_loops", []):
        if not _in(selected, value):
            raise _fail("meta", selected, value, "entry 'selected_loops'")


def _check_outermost(spans: list[list[int]]) -> None:
    """The outermost loops (those in no other loop or firing) do not overlap: the run is tiled by them, and
    reports add up their times as the run's."""
    timed = sorted((span[0], span[1], i) for i, span in enumerate(spans)
                   if is_outermost(span) and 0 <= span[0] <= span[1])
    for (_, end, previous), (start, _, i) in zip(timed, timed[1:]):
        if start < end:
            raise Invalid("loop_spans", f"outermost loop {i} starts at {start}, before outermost loop {previous} "
                                        f"ends at {end}; outermost loops cannot overlap", f"entry {i}")
