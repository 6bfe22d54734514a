"""One timeline of a loopviz trace and a torch.profiler trace: the profiler's operators inside loopviz's work."""
from __future__ import annotations

import json
import re
import warnings

import pytest
from fastai.test_utils import synth_learner
from torch.profiler import ProfilerActivity, profile, schedule

from loopviz.errors import LoopvizError


def traced_and_profiled(tmp_path, ranges=True, steps=None):
    """A fit of 4 training batches traced by loopviz inside a CPU torch.profiler (stepped per batch with `steps`)."""
    learn = synth_learner(n_trn=4, n_val=1, path=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with learn.no_bar(), learn.no_logging():
            with profile(activities=[ProfilerActivity.CPU], schedule=steps) as prof, learn.trace(ranges=ranges) as t:
                if steps is None:
                    learn.fit(1)
                else:
                    from fastai.callback.core import Callback

                    class Step(Callback):
                        "Steps the profiler's schedule after each training batch"

                        def after_batch(self):
                            if self.training:
                                prof.step()

                    learn.fit(1, cbs=[Step()])
    return t, prof


def within(op, spans, slack=1e-3):
    """Whether an event lies inside one of the spans (µs, to a nanosecond, or to `slack` µs)."""
    return any(s["ts"] - slack <= op["ts"] and op["ts"] + op.get("dur", 0) <= s["ts"] + s["dur"] + slack for s in spans)


@pytest.mark.parametrize("ranges", [True, False])
def test_forward_operators_sit_inside_loopviz_forward_work(tmp_path, ranges):
    t, prof = traced_and_profiled(tmp_path, ranges=ranges)
    merged = json.loads(t.to_perfetto_with(prof, tmp_path / "merged.json").read_text())
    events = merged["traceEvents"]
    forward = [e for e in events if e.get("cat") == "work" and e["name"] == "forward"]
    backward = [e for e in events if e.get("cat") == "work" and e["name"] == "backward"]
    # placed on loopviz's clock to a few µs (the median offset of the paired ranges); the tiny model's forward is
    # itself only a few µs long, so each multiply is looked for within 20 µs of its work
    muls = [e for e in events if e.get("cat") == "cpu_op" and e["name"] == "aten::mul"
            and within(e, forward + backward, slack=20)]
    assert len(forward) == 5 and len(muls) >= 5  # 4 training batches and 1 validation batch: a*x+b in each
    in_forward = sum(within(op, forward, slack=20) for op in muls)
    assert in_forward == 5
    placed = merged["otherData"]["profiler"]["placed by"]
    assert ("event ranges (ranges=True)" in placed) == ranges and (placed == "unix time") == (not ranges)


def test_a_schedule_keeps_only_the_profiled_batches(tmp_path):
    t, prof = traced_and_profiled(tmp_path, steps=schedule(wait=1, warmup=1, active=1, repeat=1))
    merged = json.loads(t.to_perfetto_with(prof, tmp_path / "merged.json").read_text())
    info = merged["otherData"]["profiler"]
    kept = [e for e in merged["traceEvents"] if e.get("cat") == "event"]
    assert 0 < len(kept) < info["of_firings"]
    assert {e["args"]["iter"] for e in kept if e["name"] == "before_batch"} <= {1, 2, 3}


def test_a_bad_profiler_argument_is_refused(tmp_path):
    t, _ = traced_and_profiled(tmp_path)
    with pytest.raises(LoopvizError, match="profiler must be a torch.profiler.profile"):
        t.to_perfetto_with(42, tmp_path / "x.json")


def metadata(events, name):
    """{pid: args} of the metadata events called `name` (the last one of each process)."""
    return {e["pid"]: e["args"] for e in events if e.get("ph") == "M" and e["name"] == name}


def test_the_profilers_processes_are_named_and_sorted_after_loopviz(tmp_path):
    t, prof = traced_and_profiled(tmp_path)
    merged = json.loads(t.to_perfetto_with(prof, tmp_path / "merged.json").read_text())
    events = merged["traceEvents"]
    ours = {e["pid"] for e in events if e.get("cat") in ("loop", "event", "callback", "work")}
    theirs = {e["pid"] for e in events if e.get("cat") == "cpu_op"}
    assert len(ours) == 1 and len(theirs) == 1 and not ours & theirs  # the fit's pid is Kineto's too: moved
    (pid,), (cpu,) = ours, theirs
    names, sort = metadata(events, "process_name"), metadata(events, "process_sort_index")
    assert names[pid]["name"].startswith("loopviz: fastai")
    assert names[cpu]["name"] == f"torch.profiler: python (pid {pid})"  # Kineto's name, and the real pid
    assert sort[pid]["sort_index"] < sort[cpu]["sort_index"]
    threads = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e["name"] == "thread_name"}
    assert {(e["pid"], e["tid"]) for e in events if e.get("ph") in ("X", "s", "f") and type(e["pid"]) is int} <= threads
    flows = [e for e in events if e.get("ph") in ("s", "f")]
    assert flows and {e["pid"] for e in flows} == {cpu}


def test_a_kineto_pid_equal_to_loopvizs_is_moved_in_every_event(tmp_path):
    from loopviz.trace.chrome import chrome_trace
    from loopviz.trace.profiler import merged_with_profiler

    t, _ = traced_and_profiled(tmp_path, ranges=False)
    pid, base = t.meta["pid"], chrome_trace(t)["otherData"]["baseTimeNanoseconds"]
    op = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": pid, "tid": 7, "ts": 100.0, "dur": 50.0}
    kineto = {"baseTimeNanoseconds": base, "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "ts": 0, "args": {"name": "python"}},
        {"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "ts": 0, "args": {"sort_index": pid}},
        {"ph": "M", "name": "thread_name", "pid": pid, "tid": 7, "ts": 0, "args": {"name": "thread 7 (python)"}},
        op, {**op, "name": "cudaLaunchKernel", "cat": "cuda_runtime", "ts": 110.0, "dur": 5.0},
        {"ph": "s", "id": 1, "pid": pid, "tid": 7, "ts": 110.0, "cat": "ac2g", "name": "ac2g"},
        {"ph": "f", "id": 1, "pid": 0, "tid": 3, "ts": 120.0, "cat": "ac2g", "name": "ac2g", "bp": "e"},
        {"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 3, "ts": 120.0, "dur": 20.0},  # GPU 0, unnamed
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "pid": pid + 1, "tid": 9, "ts": 130.0, "dur": 5.0},
        {"ph": "M", "name": "process_sort_index", "pid": "Spans", "tid": 0, "ts": 0, "args": {"sort_index": 9}},
        # as Kineto wrote them on an H100: a GPU named after the program, labelled by device; its overhead at pid -1
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "ts": 0, "args": {"name": "python3"}},
        {"ph": "M", "name": "process_labels", "pid": 1, "tid": 0, "ts": 0, "args": {"labels": "GPU 1"}},
        {"ph": "X", "cat": "overhead", "name": "CUPTI Overhead", "pid": -1, "tid": 0, "ts": 100.0, "dur": 3.0},
    ]}
    events = merged_with_profiler(t, kineto)["traceEvents"]
    ours = [e for e in events if e.get("cat") in ("loop", "event", "callback", "work")]
    assert ours and {e["pid"] for e in ours} == {pid}
    moved = {e["pid"] for e in events if e.get("name") in ("aten::mm", "cudaLaunchKernel") or e.get("ph") == "s"}
    assert len(moved) == 1 and moved.isdisjoint({pid, pid + 1, 0})  # a free pid, the same in every event
    (new,) = moved
    names, sort = metadata(events, "process_name"), metadata(events, "process_sort_index")
    assert [e["pid"] for e in events if e.get("ph") == "M" and e.get("args", {}).get("name") == "thread 7 (python)"] == [new]
    assert names[new]["name"] == f"torch.profiler: python (pid {pid})"
    assert names[pid + 1]["name"] == f"torch.profiler: CPU (pid {pid + 1})"
    assert names[0]["name"] == "torch.profiler: GPU 0" and names[1]["name"] == "torch.profiler: GPU 1"
    assert names[-1]["name"] == "torch.profiler: its own overhead"
    assert metadata(events, "thread_name")[0]["name"] == "stream 3"
    assert [e["pid"] for e in events if e.get("ph") == "f"] == [0]  # the flow's end stays on the GPU
    assert sort[pid]["sort_index"] < sort[new]["sort_index"] < sort[pid + 1]["sort_index"] < sort[0]["sort_index"]
    assert sort["Spans"]["sort_index"] == 9  # Kineto's own rows keep theirs
    assert sum(e.get("ph") == "M" and e["name"] == "process_sort_index" and e["pid"] == new for e in events) == 1


def test_a_profiler_file_that_is_not_a_chrome_trace_is_named(tmp_path):
    from loopviz.trace.profiler import profiler_events

    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"events": []}')
    with pytest.raises(LoopvizError, match=r"'.*bad.json' is not a Chrome trace \(not JSON"):
        profiler_events(tmp_path / "bad.json")
    with pytest.raises(LoopvizError, match=r"'.*other.json' is not a Chrome trace .*export_chrome_trace"):
        profiler_events(tmp_path / "other.json")
    with pytest.raises(LoopvizError, match=r"no profiler trace at '.*missing.json'"):
        profiler_events(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A small fit traced inside a profiler (the profiler traces of the tests below are written by hand)."""
    t, _ = traced_and_profiled(tmp_path_factory.mktemp("profiler"), ranges=False)
    return t


def kineto_with(field, value, base=None):
    """A profiler trace whose second event (traceEvents[1]) has `field` set to `value` (the base time when
    `field` is baseTimeNanoseconds)."""
    op = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 7, "ts": 100.0, "dur": 50.0}
    kineto = {"baseTimeNanoseconds": base or 0, "traceEvents": [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "ts": 0, "args": {"name": "python"}}, dict(op), op]}
    if field == "baseTimeNanoseconds":
        kineto[field] = value
    else:
        kineto["traceEvents"][1][field] = value
    return kineto


# the profiler's fields as the hostile files of issue 24 set them: each raised a raw exception or wrote NaN
BAD_FIELDS = [
    ("ts", "abc", "'abc', not a finite number of µs"), ("ts", None, "null, not a finite number of µs"),
    ("ts", [1.0], "a list of 1, not a finite number of µs"), ("ts", float("inf"), "Infinity, not a finite number"),
    ("ts", float("nan"), "NaN, not a finite number of µs"), ("dur", "5", "'5', not a finite number of µs"),
    ("cat", ["kernel"], "a list of 1, not a string"), ("cat", {"k": 1}, "an object, not a string"),
    ("baseTimeNanoseconds", "1", "'1', not an integer"), ("baseTimeNanoseconds", float("nan"), "NaN, not an integer"),
    ("baseTimeNanoseconds", float("inf"), "Infinity, not an integer"),
    ("baseTimeNanoseconds", 1e400, "Infinity, not an integer"), ("baseTimeNanoseconds", [1], "a list of 1, not an"),
]


@pytest.mark.parametrize("field, value, expected", BAD_FIELDS)
def test_a_profiler_field_of_the_wrong_type_is_refused_by_name_and_event(traced, tmp_path, field, value, expected):
    at = "" if field == "baseTimeNanoseconds" else " of traceEvents[1]"
    with pytest.raises(LoopvizError, match=re.escape(f"the profiler's trace: field {field!r}{at}: is {expected}")):
        traced.to_perfetto_with(kineto_with(field, value), tmp_path / "merged.json")
    assert not (tmp_path / "merged.json").exists()


def test_a_non_finite_number_elsewhere_in_the_profilers_events_is_never_written(traced, tmp_path):
    from loopviz.trace.chrome import chrome_trace

    kineto = kineto_with("args", {"flops": float("nan")}, base=chrome_trace(traced)["otherData"]["baseTimeNanoseconds"])
    with pytest.raises(LoopvizError, match=r"cannot write '.*merged.json' as JSON: traceEvents\[\d+\]\.args\.flops is "
                                           r"NaN, not a finite number"):
        traced.to_perfetto_with(kineto, tmp_path / "merged.json")
    assert not (tmp_path / "merged.json").exists()


def test_a_kineto_trace_as_exported_passes_the_checks(tmp_path):
    from loopviz.trace.profiler import checked_profiler_trace

    _, prof = traced_and_profiled(tmp_path)
    prof.export_chrome_trace(str(tmp_path / "kineto.json"))
    exported = json.loads((tmp_path / "kineto.json").read_text())
    assert checked_profiler_trace(exported, "it") is exported


class Name(str):
    """A name that counts how often it is compared (what matching firings to ranges costs)."""

    compared = 0

    def __eq__(self, other):
        Name.compared += 1
        return str.__eq__(self, other)

    def __ne__(self, other):
        Name.compared += 1
        return str.__ne__(self, other)

    __hash__ = str.__hash__


def pairing_work(monkeypatch, batches, events):
    """Comparisons and offsets computed to pair the ranges of a run of batches in the middle of `batches` batches
    of `events` firings each (one event repeated when 1) with loopviz's firings; and the first paired firing."""
    from loopviz.trace import profiler

    offsets = []

    def counted(pairs):
        offsets.append(len(pairs))
        return real(pairs)

    real = profiler._offset
    monkeypatch.setattr(profiler, "_offset", counted)
    names = [Name(f"fastai event{j}") for _ in range(batches) for j in range(events)]
    fired = [{"ts": 1000.0 * i} for i in range(len(names))]  # a firing each millisecond
    first = len(names) // 4
    ranges = [{"name": Name(str(n)), "ts": f["ts"] + 3.0} for n, f in zip(names[first:len(names) // 2], fired[first:])]
    Name.compared = 0
    pairs = profiler._pairs(names, fired, ranges)
    return Name.compared + sum(offsets), pairs[0][0] / 1000.0


@pytest.mark.parametrize("events", [10, 1])
def test_pairing_ranges_with_firings_grows_about_linearly(monkeypatch, events):
    small, first = pairing_work(monkeypatch, 200, events)
    large, first_large = pairing_work(monkeypatch, 1600, events)
    assert first == 200 * events // 4 and first_large == 1600 * events // 4  # the run nearest Unix time's placement
    assert large < 16 * small  # 8x the firings; quadratic pairing did 64x the work


def test_the_profiler_can_still_export_after_the_merge_and_an_earlier_export_is_named(tmp_path):
    """torch exports a profile once ('Trace is already saved.'): the merge leaves the profiler exporting the same
    trace, and a profiler the user exported first is refused with what to pass instead."""
    import gzip

    t, prof = traced_and_profiled(tmp_path)
    t.to_perfetto_with(prof, tmp_path / "merged.json")
    prof.export_chrome_trace(str(tmp_path / "mine.json"))  # still works
    mine = json.loads((tmp_path / "mine.json").read_text())
    assert any(e.get("name") == "aten::mul" for e in mine["traceEvents"])
    prof.export_chrome_trace(str(tmp_path / "mine.json.gz"))
    assert json.loads(gzip.decompress((tmp_path / "mine.json.gz").read_bytes())) == mine
    again = json.loads(t.to_perfetto_with(prof, tmp_path / "again.json").read_text())  # and a second merge
    assert again["traceEvents"] == json.loads((tmp_path / "merged.json").read_text())["traceEvents"]

    t, prof = traced_and_profiled(tmp_path)
    prof.export_chrome_trace(str(tmp_path / "exported.json"))
    with pytest.raises(LoopvizError, match=r"exported already, and torch exports a profile only once: pass the file"):
        t.to_perfetto_with(prof, tmp_path / "merged.json")
    merged = json.loads(t.to_perfetto_with(tmp_path / "exported.json", tmp_path / "merged.json").read_text())
    assert any(e.get("cat") == "work" for e in merged["traceEvents"])
