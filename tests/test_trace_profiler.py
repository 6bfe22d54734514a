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
