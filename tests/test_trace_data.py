"""The trace's data in one record: every field through files, aggregates split by loop, version-1 files, cheap import."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from fastai.callback.core import FetchPredsCallback
from fastai.test_utils import synth_learner

from loopviz import LoopvizError
from loopviz.trace.data import ADDED_IN_3, HIST_BUCKETS, TraceData
from loopviz.trace.layout import CANCELLED, RAN, UNKNOWN_LOOP
from loopviz.trace.record import Recorder
from loopviz.trace.sketch import value_of
from loopviz.trace.trace import FORMAT_VERSION, Trace

ROOT = Path(__file__).resolve().parents[1]


def traced_fine_tune(path: Path, nested: bool = False, **caps: int) -> Trace:
    """A fine_tune(1, freeze_epochs=1): two loops with the same label, state changes recorded; `nested`: each fit
    with a get_preds nested in its after_validate (FetchPredsCallback), as loops 1 and 3, and its data loop timed."""
    learn = synth_learner(path=path)
    with learn.no_bar(), learn.no_logging():
        with learn.trace(changes=True, data=nested, **caps) as t:
            learn.fine_tune(1, freeze_epochs=1, cbs=FetchPredsCallback() if nested else None)
    return t


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    return traced_fine_tune(tmp_path_factory.mktemp("capped"), max_calls=50, max_firings=50)


@pytest.fixture(scope="module")
def capped_nested(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    return traced_fine_tune(tmp_path_factory.mktemp("nested"), nested=True, max_calls=50, max_firings=50)


@pytest.fixture(scope="module")
def uncapped(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    return traced_fine_tune(tmp_path_factory.mktemp("uncapped"))


def event_counts(t: Trace) -> dict:
    s = t.summary()
    events = s[s["kind"] == "event"]
    return dict(zip(zip(events["name"], events["phase"]), events["count"]))


def call_counts(t: Trace) -> dict:
    b = t.by_callback()
    return dict(zip(zip(b["callback"], b["event"], b["phase"]), b["calls"]))


def change_counts(t: Trace) -> dict:
    c = t.changes()
    return dict(zip(zip(c["callback"], c["event"], c["phase"], c["attribute"]), c["count"]))


# -- (a) every field through save/load ------------------------------------------------------------


def test_the_capped_trace_fills_every_field(capped_nested):
    empty = TraceData()
    # 'host', the default, is the only clock of a run without a GPU; waits need one too (test_trace_waits.py saves and
    # loads them, recorded with a fake GPU)
    cpu_only = {"clock", "tracked_waits", "wait_agg"}
    unset = [f.name for f in fields(TraceData)
             if f.name not in cpu_only and getattr(capped_nested.data, f.name) == getattr(empty, f.name)]
    assert not unset, f"give these fields a value in the fixture, so the round trip below checks them: {unset}"


@pytest.mark.parametrize("name", ["t.trace.json", "t.trace.json.gz"])
def test_every_field_round_trips_through_a_file(capped_nested, tmp_path, name):
    back = Trace.load(capped_nested.save(tmp_path / name))
    for f in fields(TraceData):
        assert getattr(back.data, f.name) == getattr(capped_nested.data, f.name), f.name
        assert type(getattr(back.data, f.name)) is type(getattr(capped_nested.data, f.name)), f.name
    assert back.summary().equals(capped_nested.summary()) and back.changes().equals(capped_nested.changes())


def test_fields_are_attributes_of_the_trace(capped):
    for f in fields(TraceData):
        assert getattr(capped, f.name) is getattr(capped.data, f.name)
    copy = Trace(TraceData(**{f.name: getattr(capped.data, f.name) for f in fields(TraceData)}))
    copy.framework = "other 1.0"
    assert copy.data.framework == "other 1.0" and capped.framework != "other 1.0"


# -- (b) aggregates past the cap, split by loop ------------------------------------------------------


def test_aggregates_are_keyed_by_loop(capped):
    assert {key[0] for key in capped.overflow_firings} == {0, 1}
    assert {key[0] for key in capped.overflow_calls} == {0, 1}
    assert {key[0] for key in capped.change_agg} == {0, 1}


@pytest.mark.parametrize("loop", [0, 1])
def test_select_keeps_exactly_the_selected_loops_aggregates(capped, uncapped, loop):
    cut, full = capped.select([loop]), uncapped.select([loop])
    assert cut.dropped_firings > 0 and cut.dropped_calls > 0
    assert event_counts(cut) == event_counts(full)
    assert call_counts(cut) == call_counts(full)
    assert change_counts(cut) == change_counts(full)
    # the dropped counts are those of what it kept
    assert {key[0] for key in [*cut.overflow_firings, *cut.overflow_calls, *cut.change_agg]} == {loop}
    assert cut.dropped_firings == sum(a.count for a in cut.overflow_firings.values())
    assert cut.n_firings + cut.dropped_firings == full.n_firings
    assert cut.n_calls + cut.dropped_calls == full.n_calls
    assert not any("split by loop" in note for note in cut.notes())


def test_select_of_every_loop_counts_as_the_whole_trace(capped, uncapped):
    both = capped.select([0, 1])
    assert event_counts(both) == event_counts(capped) == event_counts(uncapped)
    assert call_counts(both) == call_counts(capped) == call_counts(uncapped)
    assert change_counts(both) == change_counts(capped) == change_counts(uncapped)
    assert (both.dropped_firings, both.dropped_calls, both.dropped_changes) == (
        capped.dropped_firings, capped.dropped_calls, capped.dropped_changes)


# -- (c) version-1 files ----------------------------------------------------------------------------


def as_log2(aggregate: dict) -> dict:
    """An aggregate as files before version 5 kept it: a log2 histogram (bucket b: durations of bit length b) in
    place of the sketch, each sketch bucket counted at the value it stands for."""
    hist = [aggregate["sketch"]["zeros"], *[0] * (HIST_BUCKETS - 1)]
    for key, count in aggregate["sketch"]["bins"]:
        hist[min(int(value_of(key)).bit_length(), HIST_BUCKETS - 1)] += count
    return {**{k: v for k, v in aggregate.items() if k != "sketch"}, "hist": hist}


def add_aggregates(a: dict, b: dict) -> dict:
    return {"count": a["count"] + b["count"], "total": a["total"] + b["total"], "min": min(a["min"], b["min"]),
            "max": max(a["max"], b["max"]), "hist": [x + y for x, y in zip(a["hist"], b["hist"])]}


def log2_rows(rows: list) -> list:
    return [[key, as_log2(value)] for key, value in rows]


def add_changes(a: list, b: list) -> list:
    return [a[0] + b[0], a[1], a[2], b[3], b[4]]  # b is from a later loop


def without_loops(rows: list, add) -> list:
    """[[key, value]] rows keyed (loop, ...) added up over loops, keyed without the loop."""
    out: dict = {}
    for (_, *key), value in rows:
        out[tuple(key)] = add(out[tuple(key)], value) if tuple(key) in out else value
    return [[list(key), value] for key, value in out.items()]


def as_version_1(data: dict) -> dict:
    """What loopviz wrote before aggregates were split by loop."""
    old = {**data, "version": 1}
    for name in ("change_fields", *ADDED_IN_3):
        del old[name]
    old["overflow_firings"] = without_loops(log2_rows(data["overflow_firings"]), add_aggregates)
    old["overflow_calls"] = without_loops(log2_rows(data["overflow_calls"]), add_aggregates)
    old["change_agg"] = without_loops(data["change_agg"], add_changes)
    return old


@pytest.fixture
def version_1(capped, tmp_path) -> Trace:
    path = tmp_path / "old.trace.json"
    path.write_text(json.dumps(as_version_1(capped.to_json())), encoding="utf-8")
    return Trace.load(path)


def test_a_version_1_file_loads_with_its_aggregates_in_an_unknown_loop(version_1, capped):
    assert {key[0] for key in [*version_1.overflow_firings, *version_1.overflow_calls, *version_1.change_agg]} == {UNKNOWN_LOOP}
    # percentiles past the cap differ: version 1 kept log2 histograms (test_trace_sketch.py checks how far off)
    percentiles = ["approx", "pct", "p50_ms", "p95_ms"]
    events = lambda t: t.summary().query("kind == 'event'").drop(columns=percentiles)  # noqa: E731
    assert events(version_1).equals(events(capped))
    assert any("written before loopviz kept each loop's span" in note for note in version_1.notes())
    assert any("within a factor of 1.42" in note for note in version_1.notes())
    calls = lambda t: t.by_callback().drop(columns=["pct", "p95_us"])  # noqa: E731
    assert calls(version_1).equals(calls(capped))
    assert version_1.changes().equals(capped.changes())
    assert not any("split by loop" in note for note in version_1.notes())
    assert version_1.to_json()["version"] == FORMAT_VERSION


def test_select_on_a_version_1_file_keeps_its_aggregates_and_says_so(version_1, capped):
    cut = version_1.select([1])
    assert cut.overflow_firings == version_1.overflow_firings and cut.overflow_calls == version_1.overflow_calls
    assert cut.change_agg == version_1.change_agg
    assert (cut.dropped_firings, cut.dropped_calls) == (capped.dropped_firings, capped.dropped_calls)
    note = next(note for note in cut.notes() if "could not be split by loop" in note)
    assert "cut to loop(s) 1 (fine_tune > fit_one_cycle > fit)" in note
    assert f"{capped.dropped_firings:,} firings and {capped.dropped_calls:,} callback calls" in note
    assert f"{sum(e[0] for e in capped.change_agg.values()):,} state changes" in note


def test_other_versions_are_refused(capped):
    data = {**capped.to_json(), "version": 7}
    with pytest.raises(LoopvizError, match="version 7 is not supported; this loopviz reads versions 1, 2, 3, 4, 5, 6"):
        Trace.from_json(data)
    data = {**capped.to_json(), "firing_fields": ["event"]}
    with pytest.raises(LoopvizError, match="different record fields"):
        Trace.from_json(data)


# -- the recorder's rows and keys -------------------------------------------------------------------


def test_a_recorded_row_reads_back_by_its_field_names():
    rec = Recorder()
    t = Trace.recording(rec)
    rec.begin_loop("fit")
    cb = rec.callback_id(1, lambda: {"cls": "Cb", "order": 0})
    outer = rec.begin_firing("before_batch", 1, 2, 3)
    inner = rec.begin_firing("after_pred", 2, 4, 5)
    rec.call(cb, 10, 25, RAN)
    rec.end_firing(inner, CANCELLED)
    rec.end_firing(outer, 0)
    t.finish("test")
    row = t.firings_df().iloc[1]
    assert (row["event"], row["phase"], row["epoch"], row["iter"], row["loop"], row["parent"], row["status"]) == (
        "after_pred", "valid", 4, 5, "fit", 0, "cancelled")
    assert row["end"] >= row["start"] and (row["dev_start"], row["dev_end"]) == (-1, -1)
    call = t.calls_df().iloc[0]
    assert (call["firing"], call["callback"], call["start"], call["dur"], call["status"], call["event"]) == (
        1, "Cb", 10, 15, "ran", "after_pred")


def test_past_the_cap_a_firing_counts_in_the_loop_it_began_in():
    rec = Recorder(max_calls=0, max_firings=0)
    t = Trace.recording(rec)
    rec.begin_loop("fit")
    outer = rec.begin_firing("after_epoch", 0, 0, -1)
    rec.begin_loop("validate")  # a callback validating inside the fit's after_epoch
    inner = rec.begin_firing("before_validate", 2, 0, -1)
    rec.call(0, 0, 5, RAN)
    rec.end_firing(inner, 0)
    rec.call(0, 0, 7, RAN)
    rec.end_firing(outer, 0)
    t.finish("test")
    assert set(t.overflow_firings) == {(0, 0, 0)}
    assert set(t.overflow_nested) == {(1, 1, 2)}  # it ran inside after_epoch
    assert set(t.overflow_calls) == {(1, 1, 2, 0, RAN), (0, 0, 0, 0, RAN)}
    assert (t.dropped_firings, t.dropped_calls) == (2, 2)
    assert t.select(["validate"]).dropped_calls == 1


# -- (d) a cheap import -----------------------------------------------------------------------------


def test_importing_the_trace_modules_imports_neither_numpy_nor_pandas():
    code = ("import sys, loopviz.trace.trace, loopviz.trace.record, loopviz.trace.data; "
            "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_selected_nested_loop_still_says_which_event_ran_it():
    """select renumbers firings; a kept nested loop's parent firing is renumbered with them."""
    learn = synth_learner()
    if hasattr(learn, "progress"):
        learn.remove_cb(learn.progress)
    with learn.trace() as t:
        learn.fit(1)
        learn.fit(1, cbs=FetchPredsCallback())  # a get_preds inside this fit's after_validate
    loops = t.loops_df().set_index("loop")
    nested = int(loops.index[loops["parent"] == 1][0])
    assert loops.loc[nested, "inside_event"] == "after_validate"
    cut = t.select([1, nested]).loops_df().set_index("loop")  # loop 0's firings go: later firings move down
    assert cut.loc[nested, "inside_event"] == "after_validate"
    assert cut.loc[nested, "parent"] == 1


def test_reports_on_a_trace_with_many_event_names_stay_small(tmp_path):
    """The work between events is named by a lookup per pair, not a table of every pair of event names."""
    import tracemalloc

    learn = synth_learner()
    with learn.trace() as t:
        learn.fit(1)
    data = t.to_json()
    data["events"] = [*data["events"], *(f"custom_{i}" for i in range(10_000))]
    many = Trace.from_json(data)
    tracemalloc.start()
    try:
        many.work_df()
        many.summary()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB"
