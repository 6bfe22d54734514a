"""The Chrome/Perfetto export written straight to text says exactly what the dict form says."""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from fastai.callback.core import Callback, FetchPredsCallback
from fastai.test_utils import synth_learner

from loopviz.trace.chrome import _micros, _rows_text, chrome_text, chrome_trace
from loopviz.trace.clock import CudaEventClock
from loopviz.trace.layout import RAN
from loopviz.trace.record import Recorder
from loopviz.trace.trace import Trace
from tests.test_trace_clock import FakeGPU, fake_host


def rounded(data: dict) -> dict:
    """Times to the nanosecond (the text form writes µs with three decimals)."""
    for event in data["traceEvents"]:
        if "ts" in event:
            event["ts"], event["dur"] = round(event["ts"], 3), round(event["dur"], 3)
    return data


def test_the_text_form_is_the_dict_form():
    Odd = type('Quote"\\Back\x1b[2J', (Callback,), {"after_batch": lambda self: None, "order": 1.5})
    learn = synth_learner(cbs=[Odd()])
    with learn.no_bar(), learn.no_logging(), learn.trace(max_calls=40, max_firings=60) as t:
        learn.fit(1, cbs=FetchPredsCallback())  # a nested loop, and records past the caps
    as_text = json.loads(chrome_text(t))
    assert rounded(as_text) == rounded(chrome_trace(t))
    cats = {e.get("cat") for e in as_text["traceEvents"]}
    assert {"loop", "event", "callback", "work"} <= cats
    assert any(e["name"].startswith('Quote"\\Back\x1b[2J.') for e in as_text["traceEvents"])
    assert_text_is_dict_form(t)


def pairs(value: Any, key: str | None = None) -> Any:
    """JSON data as the text form writes it: objects as (key, value) lists in order, floats as their text (times
    with three decimals)."""
    if isinstance(value, dict):
        return [(k, pairs(v, k)) for k, v in value.items()]
    if isinstance(value, list):
        return [pairs(v) for v in value]
    if isinstance(value, float):
        return "%.3f" % value if key in ("ts", "dur") else json.dumps(value)
    return value


def assert_text_is_dict_form(t: Trace) -> None:
    """The text form says exactly what the dict form says: same spans, order, keys, and numbers written the same."""
    text = chrome_text(t)
    assert json.loads(text, parse_float=str, object_pairs_hook=list) == pairs(chrome_trace(t))


def trace_of_calls(times: list[int], before: int = 0, clock: Any = None) -> Trace:
    """A loop that began `before` ns ago, with batches of two events, then one firing of callback calls starting
    at `times` (ns from the loop's start, each lasting a third of that)."""
    rec = Recorder(clock)
    trace = Trace.recording(rec)
    cid = rec.callback_id(0, lambda: {"cls": "Cb", "name": "cb", "order": 0, "module": "test"})
    start = time.perf_counter_ns() - before
    rec.begin_loop("fit", start)
    for i in range(3):
        for event in ("before_batch", "after_batch"):
            rec.end_firing(rec.begin_firing(event, 1, 0, i), 0)
    index = rec.begin_firing("after_fit", 0, 0, 3)
    for t in times:
        rec.call(cid, start + t, start + t + abs(t) // 3, RAN)
    rec.end_firing(index, 0)
    rec.end_loop()
    trace.finish("test", {("before_batch", "after_batch"): "step"})
    return trace


def test_the_text_form_writes_times_as_the_dict_form_does():
    near = 2 ** 52  # from this many ns on, µs with three decimals are written from the float
    times = [0, 1, 999, 1000, 1001, 123_456_789, 10**12 + 1, near - 1001, near - 1]
    assert_text_is_dict_form(trace_of_calls(times + [-t for t in times]))
    past = [near, near + 1, near + 1001, 2**60 + 999, -near, -(2**61) - 1]
    assert_text_is_dict_form(trace_of_calls(times + past))
    assert_text_is_dict_form(trace_of_calls(times, before=2**60))  # firings past it too
    gpu = FakeGPU()  # device times, on the device's thread
    on_device = trace_of_calls(times, clock=CudaEventClock(gpu.event, fake_host(7)))
    assert chrome_text(on_device).count('"tid":2') == len(on_device.work_df()) + 1
    assert_text_is_dict_form(on_device)


def test_an_empty_trace():
    rec = Recorder()
    t = Trace.recording(rec)
    t.finish("test")
    assert_text_is_dict_form(t)


def test_micros_match_percent_3f():
    ns = np.array([0, 1, -1, 999, -999, 1000, -1000, 1001, -1001, 10**15 + 1, -(10**15) - 1, 2**52 - 1, 1 - 2**52],
                  dtype=np.int64)
    for values in (ns, np.concatenate([ns, [2**52, -(2**63)]])):
        assert _rows_text(_micros(values), len(values)) == "".join("%.3f" % (v / 1000) for v in values.tolist())
