"""`%%loopviz` / `%loopviz` in a real IPython shell, and a trace started and stopped by hand (`t.start()`,
`t.stop()`) for every adapter: what each records is what the same fit records inside `with`."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterator

import pytest
from fastai.callback.all import ProgressCallback
from fastai.test_utils import synth_learner
from IPython.core.interactiveshell import InteractiveShell

import loopviz
from loopviz.errors import LoopvizError
from loopviz.trace.trace import Trace


@pytest.fixture()
def shell() -> Iterator[InteractiveShell]:
    """An IPython shell with loopviz's extension loaded (the singleton is cleared after, for the other tests)."""
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "loopviz")
    ip.user_ns["learn"] = learner()
    try:
        yield ip
    finally:
        InteractiveShell.clear_instance()


def learner() -> Any:
    learn = synth_learner(n_trn=3, n_val=2)
    learn.remove_cb(ProgressCallback)
    return learn


def ours(learn: Any) -> list[str]:
    """The learner's attributes that are loopviz's (wrappers a trace puts on it while recording)."""
    return [name for name, value in vars(learn).items()
            if getattr(value, "__loopviz_wrapper__", False) or type(value).__module__.startswith("loopviz")]


def events(t: Trace) -> Counter:
    return Counter(t.firings_df()["event"])


def with_block() -> Counter:
    """The firings of the same fit, traced inside `with`: what the magic and start()/stop() must record."""
    learn = learner()
    with learn.trace() as t:
        learn.fit(1)
    return events(t)


def test_the_cell_magic_traces_the_learner_the_cell_names_and_shows_the_trace(shell: InteractiveShell) -> None:
    result = shell.run_cell("%%loopviz\nlearn.fit(1)\n")
    assert result.error_in_exec is None and isinstance(result.result, Trace)
    assert shell.user_ns["_loopviz"] is result.result
    assert events(result.result) == with_block()
    assert not ours(shell.user_ns["learn"])  # the learner put back


def test_the_line_magic_options(shell: InteractiveShell) -> None:
    result = shell.run_cell("%loopviz -q -o kept --data learn.fit(1)")
    assert result.result is None and shell.user_ns["kept"].meta["data"] is True
    shell.user_ns["other"] = learner()
    result = shell.run_cell("%%loopviz -t other\nlearn.fit(1)\nother.fit(1)\n")
    assert result.result.firings_df()["event"].tolist().count("before_fit") == 1  # only `other`'s fit


@pytest.mark.parametrize("cell, message", [
    ("%%loopviz\nx = 1\n", "names no learner or trainer loopviz can trace"),
    ("%%loopviz\nlearn.fit(1)\nlearn2.fit(1)\n", "names several learners or trainers (learn, learn2)"),
    ("%%loopviz\nlearn.fit(1\n", "not valid Python"),
    ("%%loopviz -t nothing\nlearn.fit(1)\n", "-t nothing: NameError"),
    ("%%loopviz -o 'a b'\nlearn.fit(1)\n", "kept under a Python name"),
    ("%%loopviz extra\nlearn.fit(1)\n", "options only on its first line"),
    ("%loopviz", "needs a statement to trace"),
    ("%%loopviz -t 3\nlearn.fit(1)\n", "no adapter for a int"),
])
def test_bad_uses_are_clear_errors(shell: InteractiveShell, capsys: pytest.CaptureFixture, cell: str,
                                   message: str) -> None:
    shell.user_ns["learn2"] = learner()
    result = shell.run_cell(cell)
    assert result.error_in_exec is not None or result.error_before_exec is not None
    assert message in str(result.error_in_exec or result.error_before_exec)
    assert "Traceback" not in capsys.readouterr().out  # a usage error, not a traceback


def test_a_cell_that_raises_keeps_the_trace_up_to_the_error(shell: InteractiveShell,
                                                            capsys: pytest.CaptureFixture) -> None:
    result = shell.run_cell("%%loopviz\nlearn.fit(1)\nraise ValueError('after the fit')\n")
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # (IPython colours its tracebacks)
    assert isinstance(result.error_in_exec, ValueError)  # a notebook run stops here, as it would untraced
    assert "after the fit" in out and "magics.py" not in out and "learn.fit(1)" in out  # the cell's own frame
    assert "the trace of the run up to the error is in _loopviz" in out
    assert events(shell.user_ns["_loopviz"]) == with_block()
    assert not ours(shell.user_ns["learn"])


def test_a_trace_started_and_stopped_by_hand_records_what_with_records() -> None:
    learn = learner()
    t = learn.trace()
    assert "never started" in repr(t) and "never started" in t._repr_html_()
    with pytest.raises(LoopvizError, match="never started"):
        t.summary()
    with pytest.raises(LoopvizError, match="never started"):
        t.stop()
    assert t.start() is t and t.recording_now
    with pytest.raises(LoopvizError, match="is recording already"):
        t.start()
    learn.fit(1)
    assert t.stop() is t and not t.recording_now
    assert events(t) == with_block()
    with pytest.raises(LoopvizError, match="has ended: a trace records once"):
        t.start()
    assert isinstance(loopviz.tracing(learn), Trace)


def test_the_trainer_and_lightning_traces_start_and_stop_by_hand(tmp_path: Any) -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from tests.hf_fixtures import tiny_trainer
    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()
    hf = tiny_trainer(tmp_path / "hf")
    t = loopviz.tracing(hf)
    t.start()
    hf.train()
    t.stop()
    assert events(t)["on_step_end"] == 4 and "call_event" not in vars(hf.callback_handler)
    pl_trainer = trainer(tmp_path / "pl", max_epochs=1)
    t = loopviz.tracing(pl_trainer).start()
    pl_trainer.fit(TinyModule(), loader(), loader())
    assert events(t.stop())["on_train_batch_start"] == 4


def test_an_option_the_target_cannot_record_is_a_usage_error(shell: InteractiveShell) -> None:
    result = shell.run_cell("%%loopviz --waits\nlearn.fit(1)\n")  # waits need CUDA: this machine has none
    error = result.error_in_exec or result.error_before_exec
    if error is None:  # (a machine with CUDA records the waits)
        assert isinstance(result.result, Trace)
        return
    assert "%loopviz:" in str(error) and "_loopviz" not in shell.user_ns
    assert not ours(shell.user_ns["learn"])
