"""Packed raw records: 32 bytes a firing and 24 a call on a real fit, exact however long a record lasted, and the
same integers after a save and load, a select, or a round trip through the matrix."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fastai.test_utils import synth_learner
from hypothesis import given, settings
from hypothesis import strategies as st

import loopviz.trace.record as record_module
from loopviz.errors import LoopvizError
from loopviz.trace.layout import (
    C_DUR, C_FIRING, F_DEV_END, F_DEV_START, F_END, F_EPOCH, F_EVENT, F_ITER, F_PARENT, F_START, NC, NF,
)
from loopviz.trace.record import RAN, Recorder
from loopviz.trace.records import MAX_EVENT, CallRecords, FiringRecords
from loopviz.trace.trace import Trace


def test_a_real_fit_keeps_32_bytes_a_firing_and_24_a_call():
    learn = synth_learner(n_trn=64)
    with learn.trace() as t:
        learn.fit(1)
    assert t.n_firings > 20 and t.n_calls > 20
    assert len(t.data.firings.packed) == 32 * t.n_firings
    assert len(t.data.calls.packed) == 24 * t.n_calls
    assert not t.data.firings.long and not t.data.calls.long and not len(t.data.firings.device)


class FakeNs:
    """A perf_counter_ns standing in for the recorder's: each call returns the next of the given times."""

    def __init__(self, times: list[int]):
        self.times = iter(times)

    def __call__(self) -> int:
        return next(self.times)


def long_trace(monkeypatch: pytest.MonkeyPatch) -> Trace:
    """A trace whose second firing lasts 5 s and whose only call 6 s: past what 32 bits of nanoseconds hold."""
    monkeypatch.setattr(record_module, "perf_counter_ns", FakeNs([100, 1_000, 2_000, 5_000_002_000]))
    rec = Recorder()
    trace = Trace.recording(rec)
    cid = rec.callback_id(1, lambda: {"cls": "Slow", "name": "slow", "order": 0, "module": "tests"})
    rec.begin_loop("fit", start=0)
    rec.end_firing(rec.begin_firing("before_fit", 0, -1, -1), 0)
    index = rec.begin_firing("after_epoch", 0, 3, 7)
    rec.call(cid, 2_000, 6_000_002_000, RAN)
    rec.end_firing(index, 0)
    rec.end_loop(end=5_000_003_000)
    trace.finish(framework="tests")
    return trace


def test_durations_past_32_bits_are_kept_exactly(monkeypatch, tmp_path):
    t = long_trace(monkeypatch)
    assert t.data.firings.long == {1: 5_000_000_000} and t.data.calls.long == {0: 6_000_000_000}
    firings, calls = t._firing_matrix(), t._call_matrix()
    assert firings[1, F_END] - firings[1, F_START] == 5_000_000_000
    assert (firings[1, F_EPOCH], firings[1, F_ITER]) == (3, 7)
    assert calls[0, C_DUR] == 6_000_000_000
    assert t.by_callback()["total_ms"].iloc[0] == pytest.approx(6_000)
    loaded = Trace.load(t.save(tmp_path / "long.json"))
    assert loaded.data.firings == t.data.firings and loaded.data.calls.long == {0: 6_000_000_000}
    assert t.select("fit").data.calls.long == {0: 6_000_000_000}


def firing_rows(draw_rows: int) -> st.SearchStrategy:
    """Firing matrices with any value a packed row holds: durations of any length, device times or none."""
    i32 = st.integers(-(2**31), 2**31 - 1)
    row = st.tuples(st.integers(0, MAX_EVENT), st.integers(0, 255), i32, i32, i32, i32, st.integers(0, 2**62),
                    st.integers(-(2**40), 2**40), st.integers(0, 255), st.integers(-1, 2**62), st.integers(-1, 2**62))
    return st.lists(row, max_size=draw_rows)


@settings(max_examples=60, deadline=None)
@given(rows=firing_rows(12), device=st.booleans())
def test_any_firing_matrix_packs_and_unpacks_to_itself(rows, device):
    m = np.array([[*r[:7], r[6] + r[7], *r[8:]] for r in rows], np.int64).reshape(-1, NF)
    if not device:
        m[:, [F_DEV_START, F_DEV_END]] = -1
    packed = FiringRecords.from_matrix(m)
    assert np.array_equal(packed.matrix(), m)
    assert len(packed.packed) == 32 * len(m)
    assert len(packed.device) == (2 * len(m) if device and (m[:, [F_DEV_START, F_DEV_END]] != -1).any() else 0)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.integers(0, 2**62),
                               st.integers(-(2**40), 2**40), st.integers(0, 255)), max_size=12))
def test_any_call_matrix_packs_and_unpacks_to_itself(rows):
    m = np.array(rows, np.int64).reshape(-1, NC)
    packed = CallRecords.from_matrix(m)
    assert np.array_equal(packed.matrix(), m) and len(packed.packed) == 24 * len(m)


def test_a_file_value_a_row_cannot_hold_is_refused_by_name(tmp_path, monkeypatch):
    obj = long_trace(monkeypatch).to_json()
    obj["firings"][NF + F_EPOCH] = 2**40
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(LoopvizError) as caught:
        Trace.load(path)
    message = str(caught.value)
    assert "field 'firings' record 1: epoch is 1099511627776, outside what a trace record holds" in message
    assert repr(str(path)) in message and "record the trace again" in message


def test_an_epoch_that_is_not_a_32_bit_integer_is_recorded_as_minus_one():
    rec = Recorder()
    for epoch, iteration in ((1.5, 2), ("x", None), (2**40, 3)):
        rec.end_firing(rec.begin_firing("after_batch", 1, epoch, iteration), 0)
    m = rec.close().firings.matrix()
    assert m[:, F_EPOCH].tolist() == [-1, -1, -1] and m[:, F_ITER].tolist() == [-1, -1, -1]


def test_events_past_what_a_row_can_name_are_aggregated_not_lost():
    rec = Recorder()
    rec.begin_loop("custom")
    names = [f"event_{i}" for i in range(MAX_EVENT + 10)]
    for name in names:
        rec.end_firing(rec.begin_firing(name, 0, -1, -1), 0)
    data = rec.close()
    assert len(data.firings) == MAX_EVENT + 1
    assert data.dropped_firings == len(names) - (MAX_EVENT + 1)
    assert {data.events[key[1]] for key in data.overflow_firings} == set(names[MAX_EVENT + 1:])
    assert int(data.firings.matrix()[:, F_EVENT].max()) == MAX_EVENT



def test_rows_made_inside_a_long_open_firing_are_packed_once_it_ends():
    """An outer firing stays open while more rows than a batch are made inside it (a handler running get_preds):
    nothing is packed while it is open (its values stay where its end is written), everything once it has ended,
    its long duration included."""
    ticks = iter(range(0, 10**15, 1_000))
    rec = Recorder(now=lambda: next(ticks))
    outer = rec.begin_firing("after_epoch", 0, 4, 9)
    for i in range(2 * record_module.PENDING_ROWS + 5):  # past the batch twice over
        if i == record_module.PENDING_ROWS + 1:
            assert len(rec.firings) == 0  # nothing packed while the outer firing is open
        inner = rec.begin_firing("after_batch", 2, 4, i)
        rec.call(0, rec.now(), rec.now(), RAN)
        rec.end_firing(inner, 0)
    rec.end_firing(outer, 0, end=rec.now() + 7_000_000_000)  # past what 32 bits hold
    data = rec.close()
    m = data.firings.matrix()
    assert len(m) == 2 * record_module.PENDING_ROWS + 6 and data.firings.long == {0: m[0, F_END] - m[0, F_START]}
    assert m[0, F_END] - m[0, F_START] > 7_000_000_000 and (m[0, F_EPOCH], m[0, F_ITER]) == (4, 9)
    assert (m[1:, F_PARENT] == 0).all() and m[1:, F_ITER].tolist() == list(range(len(m) - 1))
    assert (m[1:, F_END] - m[1:, F_START] == 3_000).all()  # begin, two reads for the call, end
    calls = data.calls.matrix()
    assert len(calls) == len(m) - 1 and calls[:, C_FIRING].tolist() == list(range(1, len(m)))


_RANGES = {"q": (-(2 ** 63), 2 ** 63 - 1), "i": (-(2 ** 31), 2 ** 31 - 1), "I": (0, 2 ** 32 - 1), "H": (0, 2 ** 16 - 1),
           "B": (0, 255)}


def _rows(row: struct.Struct) -> st.SearchStrategy:
    """Rows whose every value is within its field's range (at its edges too)."""
    fields = [st.one_of(st.integers(*_RANGES[code]), st.sampled_from(_RANGES[code]))
              for code in row.format[1:] if code in _RANGES]
    return st.lists(st.tuples(*fields).map(list), min_size=1, max_size=150)


@given(st.data(), st.booleans(), st.booleans())
@settings(max_examples=80, deadline=None)
def test_rows_packed_in_bulk_are_the_bytes_or_the_error_packing_them_one_by_one_gives(data, calls, spoil):
    # the bulk format is native where that gives the same bytes, with its 64-bit fields as ssize_t: it must give
    # exactly the row format's bytes, and refuse what the row format refuses (`spoil`: one value no row can hold)
    row = record_module.CALL_ROW if calls else record_module.FIRING_ROW
    width = 5 if calls else 9
    rows = data.draw(_rows(row))
    if spoil:
        at, field = data.draw(st.integers(0, len(rows) - 1)), data.draw(st.integers(0, width - 1))
        low, high = _RANGES[[code for code in row.format[1:] if code in _RANGES][field]]
        rows[at][field] = data.draw(st.sampled_from([low - 1, high + 1, None, 1.5]))
    try:
        expected = b"".join(row.pack(*values) for values in rows)
    except (struct.error, TypeError):
        expected = None
    flat = [value for values in rows for value in values]
    if expected is None:
        with pytest.raises((struct.error, TypeError)):
            record_module._pack_many(row, flat, width)
    else:
        assert record_module._pack_many(row, flat, width) == expected
