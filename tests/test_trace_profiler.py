"""One timeline of a loopviz trace and a torch.profiler trace: the profiler's operators inside loopviz's work."""
from __future__ import annotations

import json
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


def within(op, spans):
    """Whether an event lies inside one of the spans (µs, to a nanosecond)."""
    return any(s["ts"] - 1e-3 <= op["ts"] and op["ts"] + op.get("dur", 0) <= s["ts"] + s["dur"] + 1e-3 for s in spans)


@pytest.mark.parametrize("ranges", [True, False])
def test_forward_operators_sit_inside_loopviz_forward_work(tmp_path, ranges):
    t, prof = traced_and_profiled(tmp_path, ranges=ranges)
    merged = json.loads(t.to_perfetto_with(prof, tmp_path / "merged.json").read_text())
    events = merged["traceEvents"]
    forward = [e for e in events if e.get("cat") == "work" and e["name"] == "forward"]
    backward = [e for e in events if e.get("cat") == "work" and e["name"] == "backward"]
    muls = [e for e in events if e.get("cat") == "cpu_op" and e["name"] == "aten::mul"
            and within(e, forward + backward)]
    assert len(forward) == 5 and len(muls) >= 5  # 4 training batches and 1 validation batch: a*x+b in each
    in_forward = sum(within(op, forward) for op in muls)
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
