"""Traces started and ended from several threads, traces never exited, and `t.stop()`: fastai is left exactly as
it was, learners are not kept alive, and a still-recording trace says so in one line."""
from __future__ import annotations

import gc
import sys
import threading
import warnings
import weakref

import pytest
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.test_utils import synth_learner
from rich.console import Console

from loopviz.adapters.fastai import tracer
from loopviz.errors import LoopvizError
from loopviz.trace import instrument

from tests.spy import spy

ENTRY_POINTS = ("_call_one", "fit", "validate", "get_preds", "lr_find", "fine_tune", "fit_one_cycle")


def dispatch_now() -> dict[str, object]:
    """Everything loopviz patches while tracing, by identity."""
    found: dict[str, object] = {name: Learner.__dict__.get(name) for name in ENTRY_POINTS}
    found["Callback.__call__"] = Callback.__dict__["__call__"]
    found["getcallable"] = fastai_core.getcallable
    return found


class CallsOverride(Callback):
    """A callback class with its own __call__, which the tracer patches at before_fit."""

    def __call__(self, event_name: str) -> None:
        super().__call__(event_name)


def quiet_learner(**kwargs) -> Learner:
    learn = synth_learner(**kwargs)
    if hasattr(learn, "progress"):
        learn.remove_cb(learn.progress)
    return learn


@pytest.fixture
def tiny_switch_interval():
    """Switch threads as often as CPython allows: races that the default interval hides show up."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def run_threads(target, args_list) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(*args):
        try:
            target(*args)
        except BaseException as e:  # noqa: BLE001  (collected and asserted on)
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_four_threads_starting_and_ending_traces_leave_fastai_as_it_was(tiny_switch_interval):
    pristine = dispatch_now()
    learns = [quiet_learner() for _ in range(4)]

    def enter_and_exit(learn: Learner) -> None:
        for _ in range(1500):
            with learn.trace():
                pass

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        errors = run_threads(enter_and_exit, [(learn,) for learn in learns])
    assert errors == []
    assert [str(w.message) for w in caught if "loopviz" in str(w.message)] == []
    assert dispatch_now() == pristine
    assert tracer.active_recorders() == 0 and instrument.installed() == []


def test_a_fit_traced_after_the_stress_records_what_fastai_fires(tiny_switch_interval):
    learns = [quiet_learner() for _ in range(4)]
    run_threads(lambda learn: [learn.trace().__enter__().stop() for _ in range(500)], [(lr,) for lr in learns])
    learn = learns[0]
    with spy(learn) as seen:
        learn.fit(1)
    with learn.trace() as t:
        learn.fit(1)
    assert t.n_firings == len(seen.firings) > 0


def test_traced_fits_in_parallel_threads_each_record_their_own_learner(tiny_switch_interval):
    learns = [quiet_learner(cbs=[CallsOverride()]) for _ in range(3)]
    with spy(learns[0]) as seen:
        learns[0].fit(1)
    expected = len(seen.firings)
    traces: dict[int, object] = {}

    def traced_fit(i: int) -> None:
        with learns[i].trace() as t:
            learns[i].fit(1)
        traces[i] = t

    pristine = dispatch_now()
    assert run_threads(traced_fit, [(i,) for i in range(3)]) == []
    assert dispatch_now() == pristine
    assert [traces[i].n_firings for i in range(3)] == [expected] * 3
    for i in range(3):
        ran = traces[i].by_callback().query("callback == 'CallsOverride'")
        assert ran["calls"].sum() == expected  # an overriding __call__ is called at every firing


def test_a_trace_never_exited_ends_when_its_learner_is_collected():
    pristine = dispatch_now()
    learn = quiet_learner()
    t = learn.trace().__enter__()
    learn.fit(1)
    gone = weakref.ref(learn)
    del learn
    gc.collect()
    assert gone() is None, "the trace kept its learner alive"
    assert dispatch_now() == pristine and tracer.active_recorders() == 0
    assert not t.recording_now and t.n_firings > 0
    assert "fit" in str(t)


def test_stop_ends_a_trace_entered_without_with():
    pristine = dispatch_now()
    learn = quiet_learner()
    t = learn.trace().__enter__()
    learn.fit(1)
    assert t.recording_now and dispatch_now() != pristine
    assert t.stop() is t
    assert dispatch_now() == pristine and not t.recording_now
    firings = t.n_firings
    t.stop()  # a second stop changes nothing
    learn.fit(1)  # and later fits are not recorded
    assert t.n_firings == firings > 0


def test_stop_inside_the_with_block_ends_the_recording_there():
    learn = quiet_learner()
    with learn.trace() as t:
        learn.fit(1)
        t.stop()
        learn.fit(1)
    with spy(learn) as seen:
        learn.fit(1)
    assert t.n_firings == len(seen.firings)


def test_one_of_two_traces_stopping_keeps_the_other_recording():
    a, b = quiet_learner(), quiet_learner()
    with a.trace() as ta:
        tb = b.trace().__enter__()
        tb.stop()
        a.fit(1)
    with spy(a) as seen:
        a.fit(1)
    assert ta.n_firings == len(seen.firings) and tb.n_firings == 0


def test_a_still_recording_trace_displays_one_line():
    learn = quiet_learner()
    with learn.trace() as t:
        shown = [repr(t), str(t), t._repr_html_()]
        console = Console(file=__import__("io").StringIO(), width=100)
        console.print(t)
        shown.append(console.file.getvalue())
        assert all("still recording" in text and text.strip().count("\n") == 0 for text in shown)
        with pytest.raises(LoopvizError, match=r"still recording.*t\.stop\(\)"):
            t.summary()


def test_a_session_is_entered_once():
    learn = quiet_learner()
    session = learn.trace()
    with session:
        pass
    with pytest.raises(LoopvizError, match="has ended: a trace records once; start a new one"):
        session.__enter__()


def test_a_learner_collected_while_this_thread_patches_is_ended_after_it():
    pristine = dispatch_now()
    kept, dropped = quiet_learner(), quiet_learner()
    t_kept = kept.trace().__enter__()
    t_dropped = dropped.trace().__enter__()
    gone = weakref.ref(dropped)
    with instrument.guarded():  # as if the garbage collector ran while this thread installs wrappers
        del dropped
        gc.collect()
        assert gone() is None and t_dropped.recording_now  # waits: ending it now would pull wrappers mid-install
    assert not t_dropped.recording_now
    assert tracer.active_recorders() == 1
    t_kept.stop()
    assert dispatch_now() == pristine


def test_a_callback_moved_to_another_learner_is_counted_where_it_runs():
    """A callback seen without a handler in one traced learner, then moved to another, counts in the other's trace."""
    a, b = quiet_learner(), quiet_learner()
    moved = Callback()
    a.add_cb(moved)
    with a.trace() as ta, b.trace() as tb:
        a("after_cancel_step")  # `moved` is seen to have no handler here
        a.remove_cb(moved)
        b.add_cb(moved)
        b("after_cancel_step")
    assert ta.no_handler_calls == len(a.cbs) + 1 and tb.no_handler_calls == len(b.cbs)
