"""JSON as loopviz writes it: compact, and a clear error, never a bare NaN or Infinity, for a non-finite number."""
from __future__ import annotations

import json

import pytest

from loopviz.errors import LoopvizError
from loopviz.trace.jsontext import compact_json


def test_finite_data_is_written_compactly():
    data = {"traceEvents": [{"ts": 1.5, "name": "a"}], "n": 10**30}
    assert compact_json(data, "it") == json.dumps(data, separators=(",", ":"))


@pytest.mark.parametrize("number, shown", [(float("nan"), "NaN"), (float("inf"), "Infinity"),
                                           (float("-inf"), "-Infinity")])
def test_a_non_finite_number_is_refused_by_where_it_is(number, shown):
    data = {"traceEvents": [{"ts": 1.0}, {"ts": 2.0, "args": {"x": [0.5, number]}}]}
    with pytest.raises(LoopvizError, match=rf"^cannot write the report as JSON: traceEvents\[1\]\.args\.x\[1\] is "
                                           rf"{shown}, not a finite number \(JSON has no NaN or Infinity\)\.$"):
        compact_json(data, "the report")
