"""The Chrome/Perfetto export written straight to text says exactly what the dict form says."""
from __future__ import annotations

import json

from fastai.callback.core import Callback, FetchPredsCallback
from fastai.test_utils import synth_learner

from loopviz.trace.chrome import chrome_text, chrome_trace


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
