"""The live view (`trace(live=True)`): the split it shows is the run's own (the incremental split of the records,
added up over a whole run, is to the nanosecond what the summary says after it), the top finding is the diagnosis's,
it shows in fastai's progress bar comment (without piling up), on lines of its own where there is no bar, in
Lightning's bar metrics and the Trainer's bar; and the learner, trainer and bar are left as they were, whether the
run ends, raises or is interrupted."""
from __future__ import annotations

import io
import re
import time
from collections import Counter
from typing import Any

import fastai.callback.all  # noqa: F401  (ProgressCallback joins the defaults, as in a notebook)
import pytest
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner
from rich.console import Console

import loopviz
from loopviz.adapters.fastai.live import LoopvizLive
from loopviz.errors import LoopvizError
from loopviz.trace import live as live_module
from loopviz.trace.families import family_of
from loopviz.trace.live import CALLBACKS, LiveStats
from loopviz.trace.live_display import LiveLine, live_items, live_lines, live_text
from loopviz.trace.record import Recorder
from loopviz.trace.reports import SETUP, CLEANUP

LINE = re.compile(r"loopviz live: (.*)")


class Pickler(Callback):
    """Pickles the learner after each epoch, as learn.export() and torch.save do (a class a pickle can name)."""

    def __init__(self):
        self.saved: list[bytes] = []

    def after_epoch(self):
        import pickle

        self.saved.append(pickle.dumps(self.learn))


@pytest.fixture
def every_batch(monkeypatch):
    """Refresh at every batch and keep every refresh in the split; diagnose at every refresh."""
    monkeypatch.setattr(live_module, "REFRESH_NS", 0)
    monkeypatch.setattr(live_module, "WINDOW", 10**9)
    monkeypatch.setattr(live_module, "FIRST_FINDING_NS", 0)
    monkeypatch.setattr(live_module, "FINDING_EVERY_NS", 0)
    monkeypatch.setattr(live_module, "FINDING_BUDGET", 0)


@pytest.fixture
def made(monkeypatch) -> list[Any]:
    """Every LiveStats made, to read after the run."""
    found: list[Any] = []
    original = LiveStats.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        found.append(self)

    monkeypatch.setattr(LiveStats, "__init__", init)
    return found


def whole_split(stats: LiveStats) -> Counter:
    """Everything the live view's split read over the run, by series (ns), the rest read now that the run ended."""
    stats.refresh()
    total: Counter = Counter()
    for spent in stats.recent:
        total.update(spent)
    return Counter({name: ns for name, ns in total.items() if ns})


def summary_split(trace: Any) -> Counter:
    """The same split from the trace's summary after the run: work rows by name, event rows by series (setup and
    cleanup, outside any event, are not steps of the loop)."""
    table = trace.summary()
    total: Counter = Counter()
    for row in table.itertuples():
        if row.kind == "work" and row.name not in (SETUP, CLEANUP):
            total[row.name] += int(round(row.total_ms * 1e6))
        elif row.kind == "event":
            total[row.name if family_of(row.name, "event") in ("data", "model", "optimizer") else CALLBACKS] += \
                int(round(row.total_ms * 1e6))
    return total


def shares_shown(text: str) -> dict[str, int]:
    """{series: percent} from a line the live view showed."""
    split = text.split(" | ")[0]
    return {name: int(share[:-1]) for name, share in (part.rsplit(" ", 1) for part in split.split(" · "))}


# -- the numbers ----------------------------------------------------------------------------------


def test_the_split_added_up_over_a_fit_is_the_summarys_to_the_microsecond(every_batch, made):
    learn = synth_learner(n_trn=160)
    with learn.no_bar(), learn.no_logging(), learn.trace(live=True) as t:
        learn.fit(2)
    live, after = whole_split(made[0]), summary_split(t)
    assert set(live) == set(after)
    for name in after:  # (the summary rounds to ns through milliseconds as floats)
        assert abs(live[name] - after[name]) <= 2 * len(t.summary()), name
    assert {"draw", "forward", "loss", "backward", "step", "zero_grad", CALLBACKS} <= set(live)


def test_lightnings_split_adds_up_to_the_run_with_nested_hooks_counted_once(every_batch, made, tmp_path):
    pytest.importorskip("lightning")
    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()
    fit = trainer(tmp_path)
    with loopviz.tracing(fit, live=True) as t:
        fit.fit(TinyModule(), loader(), loader(8))
    live, after = whole_split(made[0]), summary_split(t)
    # a hook nested in another (training_step inside optimizer_step's closure) counts once, in its own series
    assert abs(sum(live.values()) - sum(after.values())) <= 2 * len(t.summary())
    assert live["training_step"] > 0 and live["backward"] > 0


def test_the_live_finding_is_the_diagnosis_of_the_run_so_far(made):
    from loopviz.adapters.fastai.tracer import TraceSession

    clock = [0]

    def now() -> int:  # a deterministic clock: 1 µs a read, and whatever Slow spends
        clock[0] += 1000
        return clock[0]

    class Slow(Callback):
        "Spends 30 ms at every batch (on the test's clock)"

        def after_batch(self):
            clock[0] += 30_000_000

    learn = synth_learner(n_trn=200, cbs=[Slow()])
    with learn.no_bar(), learn.no_logging(), TraceSession(learn, live=True, now=now).trace as t:
        learn.fit(1)
    stats = made[0]
    shown, final = stats.finding, t.diagnose().top
    assert stats.diagnosed and shown is not None and final is not None
    assert (shown.kind, shown.culprit) == (final.kind, final.culprit) == ("slow_callback", "Slow.after_batch")
    # the first after 3 s of the run (the next due after 10 s more): 200 batches of 30 ms run for 6 s
    assert 95 <= shown.figures["calls"] <= 101


def test_a_snapshot_from_inside_a_firing_leaves_the_recording_as_it_was():
    learn = synth_learner(n_trn=40)
    seen = []

    class Peek(Callback):
        order = 70

        def after_batch(self):
            if self.iter == 5 and not seen:
                seen.append(recorder.snapshot())

    learn.add_cb(Peek())
    with learn.no_bar(), learn.no_logging():
        with learn.trace() as t:
            recorder = t._recorder
            learn.fit(1)
        with learn.trace() as untouched:
            learn.fit(1)
    (snap,) = seen
    assert t.n_firings == untouched.n_firings and t.n_calls == untouched.n_calls
    assert len(t.summary()) == len(untouched.summary())
    # as the run stood when after_batch began: five batches done, the sixth up to its after_batch
    events = [snap.events[e] for e in snap.firings.matrix()[:, 0]]
    assert events.count("after_batch") == 5 and events[-1] == "after_step"
    assert snap.calls.matrix()[:, 0].max() < len(events)  # no call of a firing left out
    calls = t.calls.matrix()
    assert (snap.calls.matrix() == calls[calls[:, 0] < len(events)]).all()  # and every call of one kept, exactly
    loopviz.Trace(snap).summary()  # a whole trace's reports read it


# -- where it shows -------------------------------------------------------------------------------


def test_fastais_bar_comment_carries_the_split_after_the_loss_and_never_piles_up(every_batch):
    comments = []

    class Watch(Callback):
        order = 62

        def after_batch(self):
            comments.append(self.learn.progress.pbar.comment)

    learn = synth_learner(n_trn=40, cbs=[Watch()])
    with learn.no_logging(), learn.trace(live=True):
        learn.fit(1)
    assert len(comments) == len(learn.dls.train) + len(learn.dls.valid)
    for comment in comments[1:]:  # (the first batch's refresh had seen no step yet)
        loss, live = comment.split(" · ", 1)
        float(loss)  # ProgressCallback's smoothed loss first
        assert comment.count("draw ") == 1 and "callbacks " in live, comment
        assert "|" in live  # the top finding after the split


def test_without_a_bar_lines_of_their_own_are_printed(every_batch, capsys):
    learn = synth_learner(n_trn=40)
    with learn.no_bar(), learn.no_logging(), learn.trace(live=True):
        learn.fit(1)
    out = capsys.readouterr().err  # (where tqdm writes: standard output keeps what the fit prints)
    lines = LINE.findall(out)
    assert lines and all("%" in line for line in lines)
    assert "  top finding so far: " in out
    assert len(lines) <= 2  # to a file: the first, then the last as it stops (a line each 10 s at most)


def test_a_terminal_line_is_redrawn_in_place():
    stats = _stats_of_a_short_run()
    out = io.StringIO()
    line = LiveLine(Console(file=out, force_terminal=True, width=120))
    line.show(stats)
    line.show(stats)
    line.stop()
    text = out.getvalue()
    assert text.count("loopviz live:") >= 2 and "\x1b[" in text  # redrawn by cursor moves, not new lines


def test_the_learner_is_left_as_it_was_after_a_fit_that_raises_or_is_interrupted(every_batch):
    for error in (RuntimeError, KeyboardInterrupt):
        class Boom(Callback):
            def after_batch(self):
                if self.iter == 3:
                    raise error("stop")

        learn = synth_learner(n_trn=40, cbs=[Boom()])
        before = list(learn.cbs)
        with pytest.raises(error):
            with learn.no_logging(), learn.trace(live=True) as t:
                learn.fit(1)
        assert list(learn.cbs) == before and not hasattr(learn, "loopviz_live")
        assert "LoopvizLive" in set(t.by_callback()["callback"])  # its own time is in the trace, named


def test_live_must_be_a_bool():
    with pytest.raises(LoopvizError, match="live"):
        synth_learner().trace(live="yes")


def test_lightnings_bar_shows_the_split_among_its_metrics_and_gets_its_own_back(every_batch, tmp_path):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import TQDMProgressBar

    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()
    shown = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            shown.append(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    bar = TQDMProgressBar()
    fit = trainer(tmp_path, callbacks=[Watch(), bar], enable_progress_bar=True)
    module = TinyModule()
    callbacks = list(fit.callbacks)
    with loopviz.tracing(fit, live=True):
        fit.fit(module, loader(), loader(8))
    assert any("backward" in metrics and "top finding" in metrics for metrics in shown)
    assert all(value.endswith("%") for metrics in shown[2:] for key, value in metrics.items() if key != "top finding")
    assert list(fit.callbacks) == callbacks
    assert "get_metrics" not in vars(bar) and "backward" not in bar.get_metrics(fit, module)


def test_lightning_without_a_bar_prints_lines_and_a_module_target_is_refused(every_batch, tmp_path, capsys):
    pytest.importorskip("lightning")
    from tests.lightning_fixtures import TinyModule, loader, quiet_lightning, trainer

    quiet_lightning()
    fit = trainer(tmp_path)
    module = TinyModule()
    with loopviz.tracing(fit, live=True):
        fit.fit(module, loader(), loader(8))
    assert LINE.findall(capsys.readouterr().err)
    with pytest.raises(LoopvizError, match="trace the Trainer"):
        loopviz.tracing(module, live=True)


def test_the_trainers_bar_shows_the_split_after_it_and_gets_its_callbacks_back(every_batch, tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    from tests.hf_fixtures import tiny_trainer

    shown = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            progress = next(cb for cb in handler.callbacks if isinstance(cb, ProgressCallback))
            shown.append(progress.training_bar.postfix)

    hf = tiny_trainer(tmp_path, n_train=40, disable_tqdm=False)
    handler = hf.callback_handler
    callbacks = list(handler.callbacks)
    with loopviz.tracing(hf, live=True):
        hf.add_callback(Watch())  # after the live view's callback: it sees what that one wrote
        hf.train()
    assert shown and all("forward+backward" in (postfix or "") for postfix in shown[1:])
    hf.remove_callback(Watch)
    assert list(handler.callbacks) == callbacks


def test_the_trainer_without_a_bar_prints_lines(every_batch, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.hf_fixtures import tiny_trainer

    hf = tiny_trainer(tmp_path, n_train=40)
    with loopviz.tracing(hf, live=True):
        hf.train()
    assert any("forward+backward" in line for line in LINE.findall(capsys.readouterr().err))


# -- hostile names --------------------------------------------------------------------------------


def _stats_of_a_short_run(event: str = "before_batch") -> LiveStats:
    """A recorder that saw a few firings of `event` and of 'after_batch', and its stats, refreshed."""
    ticks = iter(range(0, 10**9, 1000))
    rec = Recorder(now=lambda: next(ticks))
    stats = LiveStats(rec, {"work_names": {("after_batch", event): "draw"}}, refresh_ns=0)
    rec.begin_loop("fit")
    for _ in range(3):
        for name in (event, "after_batch"):
            rec.end_firing(rec.begin_firing(name, 1, 0, 0), 0)
    stats.refresh()
    return stats


def test_a_hostile_event_name_is_shown_escaped_and_cut():
    name = "evil\x1b[2J\nname" + "x" * 100
    rec_stats = _stats_of_a_short_run(name)
    rec_stats.series_of_event = lambda event: event  # (each event its own series, as a model hook's would be)
    rec_stats.recent.clear()
    rec_stats.next_row, rec_stats.last_at = 0, {}
    rec_stats.refresh()
    text = live_text(rec_stats) + "".join(live_lines(rec_stats))
    assert "\x1b" not in text and "\n" not in text and "\\x1b[2J" in text
    assert all(len(name) <= 16 for name, _ in live_items(rec_stats))


# -- the other ways in ----------------------------------------------------------------------------


def test_the_command_line_and_the_magic_take_live(every_batch, capsys):
    from click.testing import CliRunner
    from IPython.core.interactiveshell import InteractiveShell

    from loopviz.cli import cli

    result = CliRunner().invoke(cli, ["trace", "--live"])
    assert result.exit_code == 0, result.output
    assert LINE.findall(result.stderr) and "loopviz live" not in result.stdout  # the report keeps standard output
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "loopviz")
        learn = shell.user_ns["learn"] = synth_learner(n_trn=10)
        learn.remove_cb(learn.progress)
        done = shell.run_cell("%%loopviz -q --live\nlearn.fit(1)\n")
        assert done.error_in_exec is None
        assert "LoopvizLive" in set(shell.user_ns["_loopviz"].by_callback()["callback"])
        assert "LoopvizLive" not in [type(cb).__name__ for cb in learn.cbs] and not hasattr(learn, "loopviz_live")
    finally:
        InteractiveShell.clear_instance()


def test_a_miniai_learner_has_no_bar_to_show_it_on():
    from tests import miniai_style as mi

    train, valid, model, loss = mi.synthetic()
    with pytest.raises(LoopvizError, match="miniai-style learner has none"):
        loopviz.tracing(mi.Learner(model, train, valid, loss, cbs=[mi.TrainCB()]), live=True)


def test_waits_are_taken_from_the_step_they_were_waited_out_in():
    """waits=True records what each callback call and piece of work waited out (on a GPU: CI has none); the split
    shows it as 'waits', out of the series it was waited in."""
    from loopviz.trace.waits import Wait

    stats = _stats_of_a_short_run()
    before = Counter(stats.recent[-1])
    rec = stats.rec
    after_batch, before_batch = rec.event_id("after_batch"), rec.event_id("before_batch")
    rec.waited((0, after_batch, 1, 0, -1), Wait(1, 300, "x.py:1"))  # a callback's call at after_batch
    rec.waited((0, after_batch, 1, -1, before_batch), Wait(1, 200, "x.py:2"))  # the work after it: draw
    stats.recent.clear()
    stats.refresh()
    assert stats.recent[-1] == Counter({"waits": 500, CALLBACKS: -300, "draw": -200})
    stats.refresh()
    assert stats.recent[-1] == Counter()  # counted once
    assert before[CALLBACKS] > 300 and before["draw"] > 200


def test_a_learner_pickled_during_a_live_fit_leaves_the_live_view_out(every_batch):
    import pickle

    learn = synth_learner(n_trn=5, cbs=[Pickler()])
    with learn.no_bar(), learn.no_logging(), learn.trace(live=True):
        learn.fit(1)
    back = pickle.loads(learn.pickler.saved[0])
    assert "LoopvizLive" not in [type(cb).__name__ for cb in back.cbs] and not hasattr(back, "loopviz_live")
    assert [type(cb).__name__ for cb in back.cbs] == [type(cb).__name__ for cb in learn.cbs
                                                      if type(cb).__name__ != "ProgressCallback"]  # (no_bar's)


def test_a_live_view_that_fails_stops_itself_and_says_so_never_the_fit(every_batch, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("a bug of the view's")

    monkeypatch.setattr("loopviz.trace.diagnose.diagnose", broken)
    learn = synth_learner(n_trn=20)
    with learn.no_bar(), learn.no_logging(), learn.trace(live=True) as t:
        learn.fit(1)
    assert "the live view stopped (ValueError: a bug of the view's); the trace records on" in capsys.readouterr().err
    batches = (t.firings_df()["event"] == "after_batch").sum()
    assert batches == len(learn.dls.train) + len(learn.dls.valid)  # the whole fit, recorded


def test_past_the_record_cap_the_split_goes_on_from_the_aggregates(every_batch, made):
    learn = synth_learner(n_trn=60)
    with learn.no_bar(), learn.no_logging(), learn.trace(live=True, max_firings=100, max_calls=100) as t:
        learn.fit(1)
    assert t.dropped_firings > 300  # of some 500
    live, after = whole_split(made[0]), summary_split(t)
    assert set(live) == set(after)
    for name in after:
        assert abs(live[name] - after[name]) <= 2 * len(t.summary()), name
