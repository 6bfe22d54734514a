"""The Lightning adapter against real runs: its static spec, its traces and its restoring of Lightning, checked
against an independent spy of Lightning's hook dispatch (tests/lightning_fixtures.py, written without loopviz)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from lightning.pytorch.trainer import call  # noqa: E402

import loopviz  # noqa: E402
from loopviz.adapters import lightning as adapter  # noqa: E402
from loopviz.cli import cli  # noqa: E402
from loopviz.errors import LoopvizError  # noqa: E402
from loopviz.model import Phase  # noqa: E402
from loopviz.trace import instrument  # noqa: E402
from tests.lightning_fixtures import (  # noqa: E402
    CheckpointModule, HookedCallback, LoaderModule, ManualModule, PlainData, PlateauModule, Raises, ScheduledModule,
    SpyCallback, StatefulCallback, StatefulData, StopAfter, TinyData, TinyModule, TrainBackModule, TransferModule,
    TwoLoaderModule, loader, quiet_lightning, record_hooks, spying, trainer,
)

quiet_lightning()
pytestmark = pytest.mark.filterwarnings("ignore")
MODES = {0: None, 1: "train", 2: "valid"}
NAMES = ("_call_callback_hooks", "_call_lightning_module_hook", "_call_strategy_hook", "_call_lightning_datamodule_hook",
         "_call_and_handle_interrupt", "_call_callbacks_state_dict", "_call_callbacks_on_save_checkpoint",
         "_call_callbacks_on_load_checkpoint", "_call_callbacks_load_state_dict")
# the trainer knows the module's LR schedulers, and whether a loop takes its data from the module, once it has run it
KNOWN_AFTER_A_RUN = {"scheduler", "plateau", "module_data", "test_module_data"}
CASES = {  # name: (loop, trainer options, extra callbacks[, module class, datamodule class])
    "fit": ("fit", {}, []),
    "defaults": ("fit", {"enable_checkpointing": True, "enable_progress_bar": True, "enable_model_summary": True}, []),
    "checkpoint_after_validation": ("fit", {"enable_checkpointing": True, "val_check_interval": 2}, []),
    "checkpoint_then_train_mode": ("fit", {"enable_checkpointing": True, "val_check_interval": 2}, [],
                                   TrainBackModule),
    "no_sanity_check": ("fit", {"num_sanity_val_steps": 0}, []),
    "no_validation": ("fit", {"limit_val_batches": 0}, []),
    "manual": ("fit", {}, [], ManualModule),
    "scheduler": ("fit", {}, [], ScheduledModule),
    "plateau": ("fit", {}, [], PlateauModule),
    "datamodule": ("fit", {}, [], TinyModule, TinyData),
    "test_datamodule": ("test", {}, [], TinyModule, TinyData),
    "datamodule_plain": ("fit", {}, [], CheckpointModule, PlainData),  # the module's transfer hook, no datamodule's
    "datamodule_both": ("fit", {}, [], TransferModule, TinyData),  # both move batches: Lightning calls the datamodule's
    "val_check_interval": ("fit", {"val_check_interval": 2}, []),
    "early_stopping": ("fit", {"max_epochs": 6}, [EarlyStopping("val_loss", patience=0, min_delta=1e6)]),
    "should_stop": ("fit", {"max_epochs": 4}, [StopAfter(5)]),
    "accumulate": ("fit", {"accumulate_grad_batches": 2, "limit_train_batches": 3}, []),
    "validate": ("validate", {}, []),
    "test": ("test", {}, []),
    "predict": ("predict", {}, []),
    # loops with no batches: Lightning skips their hooks altogether (issue 28)
    "no_training": ("fit", {"limit_train_batches": 0}, []),
    "no_batches": ("fit", {"limit_train_batches": 0.0, "limit_val_batches": 0}, []),
    "validate_none": ("validate", {"limit_val_batches": 0}, []),
    "test_none": ("test", {"limit_test_batches": 0}, []),
    "predict_none": ("predict", {"limit_predict_batches": 0}, []),
    # issue 28: checkpoints saved and resumed from, with the datamodule's and the callbacks' states
    "checkpoint_state": ("fit", {"enable_checkpointing": True}, [StatefulCallback()], CheckpointModule, StatefulData),
    "every_n_train_steps": ("fit", {"enable_checkpointing": True}, [ModelCheckpoint(every_n_train_steps=3)],
                            CheckpointModule),
    "resume": ("fit", {"enable_checkpointing": True, "max_epochs": 3, "_resume": True}, [StatefulCallback()],
               CheckpointModule, StatefulData),
    "resume_plain": ("fit", {"max_epochs": 3, "_resume": True}, []),
    "test_resumed": ("test", {"_resume": True}, [], CheckpointModule),
    "max_steps": ("fit", {"max_steps": 6, "max_epochs": -1}, []),
    "clip": ("fit", {"gradient_clip_val": 0.5}, []),
    "test_two_loaders": ("test", {"_loaders": 2}, [], TwoLoaderModule),
    "module_data": ("fit", {"_loaders": 0}, [], LoaderModule),  # the module's own dataloader hooks
    "test_module_data": ("test", {"_loaders": 0}, [], LoaderModule),
}
TRAINS = [case for case, (loop, options, *_) in CASES.items() if loop == "fit" and options.get("limit_train_batches") != 0]


class Run:
    """One real run under both the spy and a loopviz trace."""

    def __init__(self, root: Path, loop: str, options: dict[str, Any], extra: list[Any], module: type = TinyModule,
                 data: type | None = None):
        options = dict(options)
        resume, loaders = options.pop("_resume", False), options.pop("_loaders", 1)
        ckpt = _checkpoint(root, module, data) if resume else None
        self.spy_cb = SpyCallback()
        self.called: list[str] = []  # the hook recorder's: every hook of the module, a callback and the datamodule
        self.trainer = trainer(root, [self.spy_cb, HookedCallback(self.called), *extra], **options)
        self.module = record_hooks(module(), pl.LightningModule, self.called)
        self.datamodule = (record_hooks(data(), pl.LightningDataModule, self.called, "LightningDataModule.")
                           if data is not None else None)
        self.spec_before = adapter.lightning_spec(self.trainer, self.module, loop, datamodule=self.datamodule,
                                                  ckpt_path=ckpt)
        self.before = {name: getattr(call, name) for name in NAMES}
        with spying() as self.spy:
            with loopviz.tracing(self.trainer) as self.trace:
                kw = {"ckpt_path": ckpt} if ckpt else {}
                if self.datamodule is not None:
                    getattr(self.trainer, loop)(self.module, datamodule=self.datamodule, **kw)
                elif loaders == 0:  # the module gives its own
                    getattr(self.trainer, loop)(self.module, **kw)
                elif loop == "fit":
                    self.trainer.fit(self.module, loader(), loader(), **kw)
                else:
                    getattr(self.trainer, loop)(self.module, [loader() for _ in range(loaders)], **kw)
        self.spec = adapter.lightning_spec(self.trainer, self.module, loop)

    def hook_calls(self) -> list[str]:
        """Every hook call the recorder saw, in order, a callback's and the module's calls of a hook as one."""
        names = [name.split(".")[-1] for name in self.called if name.split(".")[-1] not in NOT_SHOWN]
        return [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]

    def hook_order(self) -> list[str]:
        """The hooks in the order they were first called, as the hook recorder saw them (a callback's and the
        module's calls of one hook are one name), less the helpers and what the view does not show yet."""
        names = [name.split(".")[-1] for name in self.called]
        return [name for name in dict.fromkeys(names) if name not in NOT_SHOWN]


def _checkpoint(root: Path, module: type, data: type | None) -> str:
    """The checkpoint of one epoch's fit (saved at its end), for a run to resume from."""
    first = trainer(root / "first", [StatefulCallback(), HookedCallback([])], max_epochs=1, enable_checkpointing=True)
    first.fit(module(), datamodule=data()) if data is not None else first.fit(module(), loader(), loader())
    return first.checkpoint_callback.best_model_path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return {name: Run(tmp_path_factory.mktemp(name), *case) for name, case in CASES.items()}


def _firing_names(t: Any) -> list[str]:
    return list(t.firings_df()["event"])


def _spec_events(steps: list[Any]) -> list[str]:
    """The event names of these steps, flattened in order."""
    return [name for step in steps for name in
            (_spec_events(step.steps) if isinstance(step, Phase) else [step.name] if hasattr(step, "handlers") else [])]


# what the hook recorder sees that the view does not show as a hook: helpers the module calls itself (clip_gradients
# is configure_gradient_clipping's own call, said in its description: test_the_module_calls_inside_the_loop...)
NOT_SHOWN = {"log", "log_dict", "optimizers", "lr_schedulers", "manual_backward", "clip_gradients", "print",
             "toggle_optimizer", "untoggle_optimizer"}


@pytest.mark.parametrize("case", [c for c in CASES if c != "accumulate"])
def test_spec_order_is_the_real_order(runs: dict[str, Run], case: str) -> None:
    """Against Lightning's own way of checking its hook order: a module, a callback and a datamodule whose every hook
    records its name as it is called (each hook where its handlers start: the module's backward after
    on_before_backward, which the strategy's backward runs first)."""
    run = runs[case]
    assert run.spec.event_names() == run.hook_order()
    if case not in KNOWN_AFTER_A_RUN:  # the spec of the trainer and module before they ran
        assert run.spec_before.event_names() == run.spec.event_names()


@pytest.mark.parametrize("case", list(CASES))
def test_spec_handlers_are_the_real_handlers(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    real = run.spy.first_handlers()
    seen: set[str] = set()
    for ev in run.spec.events():  # (each hook's first event: a restore's module and callbacks fire apart)
        if ev.name in real and ev.name not in seen:
            assert [h.callback.cls for h in ev.handlers] == real[ev.name], ev.name
        seen.add(ev.name)
    assert ("training_step" in real) == (case in TRAINS)


def test_spec_accumulation_batches(runs: dict[str, Run]) -> None:
    """With accumulate_grad_batches=2 every real training batch is one of the spec's two batch paths, and each path
    occurs (batches 0 and 2 accumulate or step with zero_grad, batch 1 steps without it)."""
    run = runs["accumulate"]
    batch = next(p for p in run.spec.phases[0].phases() if p.name == "train_batch")
    inner = {p.name: _spec_events(p.steps) for p in batch.steps if isinstance(p, Phase)}
    head = _spec_events(batch.steps[:batch.steps.index(next(p for p in batch.steps if isinstance(p, Phase)))])
    names = run.hook_calls()
    starts = [i for i, n in enumerate(names) if n == "on_before_batch_transfer" and names[i + 3] == "on_train_batch_start"]
    real = [names[i:names.index("on_train_batch_end", i) + 1] for i in starts]
    assert len(real) == 6  # 3 batches, 2 epochs
    paths = {"accumulate": head + inner["accumulate"] + ["on_train_batch_end"],
             "step": head + inner["step"] + ["on_train_batch_end"]}
    assert real[0] == paths["accumulate"]
    matched = Counter()
    for seq in real:
        hit = [name for name, path in paths.items() if _is_subsequence(seq, path)]
        assert hit, seq
        matched[hit[0]] += 1
    assert matched["accumulate"] == 2 and matched["step"] == 4
    assert "accumulate_grad_batches=2" in str([p.note for p in batch.steps if isinstance(p, Phase)])


def _is_subsequence(seq: list[str], path: list[str]) -> bool:
    it = iter(path)
    return all(name in it for name in seq)


@pytest.mark.parametrize("case", list(CASES))
def test_trace_counts_and_calls_are_real(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    t = run.trace
    assert Counter(_firing_names(t)) == run.spy.counts()
    cls = [cb["cls"] for cb in t.callbacks]
    calls = Counter((cls[row.callback] if isinstance(row.callback, int) else row.callback, row.event)
                    for row in t.calls_df().itertuples())
    assert calls == run.spy.calls()
    assert Counter(run.spy_cb.calls) == Counter({hook: n for (owner, hook), n in calls.items() if owner == "SpyCallback"})


@pytest.mark.parametrize("case", list(CASES))
def test_trace_modes_match_the_spec(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    traced = {(row.event, MODES[row.mode] if isinstance(row.mode, int) else (row.mode or None))
              for row in run.trace.firings_df().itertuples()}
    assert traced == {(ev.name, ev.mode) for ev in run.spec.events() if ev.name in run.spy.counts()}


def test_default_callbacks_are_called_in_lightning_order(runs: dict[str, Run]) -> None:
    run = runs["defaults"]
    assert [h.callback.cls for h in run.spec.event("on_train_epoch_end").handlers][-2:] == ["TinyModule",
                                                                                          "ModelCheckpoint"]
    assert run.spy.first_handlers()["on_train_epoch_end"][-2:] == ["TinyModule", "ModelCheckpoint"]
    assert list((Path(run.trainer.default_root_dir) / "checkpoints").iterdir())  # it saved, under tmp_path


def test_datamodule_handlers(runs: dict[str, Run]) -> None:
    spec = runs["datamodule"].spec
    assert [h.callback.cls for h in spec.event("setup").handlers] == ["TinyData", "SpyCallback"]
    assert [h.callback.cls for h in spec.event("transfer_batch_to_device").handlers] == ["TinyData"]
    assert {"train_dataloader", "val_dataloader"} <= set(spec.event_names())


def test_trace_positions(runs: dict[str, Run]) -> None:
    f = runs["fit"].trace.firings_df()
    steps = f[f["event"] == "training_step"]
    assert list(zip(steps["epoch"], steps["iter"])) == [(e, i) for e in range(2) for i in range(4)]
    val = f[(f["event"] == "validation_step")]
    assert list(val["iter"]) == [0, 1] * 3  # the sanity check, then each epoch
    assert list(runs["fit"].trace.loops) == ["fit", "sanity_check"] and list(runs["predict"].trace.loops) == ["predict"]
    loops = runs["fit"].trace.loops_df()  # the sanity check: a loop of its own inside fit, not part of the run twice
    assert list(loops["parent"]) == [-1, 0] and list(loops["outermost"]) == [True, False]


def test_stopping_cases_stop(runs: dict[str, Run]) -> None:
    assert runs["early_stopping"].trainer.current_epoch < 6
    assert runs["should_stop"].trainer.current_epoch < 4
    assert runs["fit"].spy.counts()["on_train_epoch_start"] == 2
    assert runs["val_check_interval"].spy.counts()["on_validation_start"] == 1 + 2 * 2  # sanity, then 2 per epoch
    batch = next(p for p in runs["early_stopping"].spec.phases[0].phases() if p.name == "train_batch")
    assert batch.cancel is not None and "should_stop" in batch.cancel.exception
    assert batch.cancel.resumes_at == "on_train_epoch_end"
    names = runs["should_stop"].spy.names()  # stopped after the 5th batch: a validation, the epoch's end, the end
    assert names.count("training_step") == 5
    after = names[len(names) - names[::-1].index("training_step"):]
    assert [n for n in after if n in ("on_validation_start", "on_train_epoch_end", "on_train_end")] == \
        ["on_validation_start", "on_train_epoch_end", "on_train_end"]


@pytest.mark.parametrize("case", list(CASES))
def test_lightning_is_put_back(runs: dict[str, Run], case: str) -> None:
    run = runs[case]
    assert {name: getattr(call, name) for name in NAMES} == run.before
    for obj in [run.module, *run.trainer.callbacks]:
        assert not [k for k, v in vars(obj).items() if getattr(v, "__loopviz_wrapper__", False)]


def test_put_back_when_fit_raises(tmp_path: Path) -> None:
    class Broken(TinyModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            if batch_idx == 1:
                raise ValueError("broken")
            return super().training_step(batch, batch_idx)

    before = {name: getattr(call, name) for name in NAMES}
    tr, module = trainer(tmp_path, [SpyCallback()]), Broken()
    with pytest.raises(ValueError, match="broken"):
        with loopviz.tracing(tr) as t:
            tr.fit(module, loader())
    assert {name: getattr(call, name) for name in NAMES} == before
    assert "training_step" not in vars(module)
    f = t.firings_df()
    assert set(f[f["status"] != "ok"]["event"]) >= {"training_step", "optimizer_step"}
    assert "on_exception" in set(f["event"])


def test_two_traces_at_once(tmp_path: Path) -> None:
    before = {name: getattr(call, name) for name in NAMES}
    a, b = trainer(tmp_path, max_epochs=1), trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    with loopviz.tracing(a) as ta:
        with loopviz.tracing(b) as tb:
            b.fit(TinyModule(), loader())
        a.fit(TinyModule(), loader())
        with pytest.raises(LoopvizError, match="already being traced"):
            with loopviz.tracing(a):
                pass
    assert Counter(_firing_names(ta))["training_step"] == 4
    assert Counter(_firing_names(tb))["training_step"] == 2
    assert {name: getattr(call, name) for name in NAMES} == before


def test_tracing_a_module_traces_the_trainer_running_it(tmp_path: Path) -> None:
    module = TinyModule()
    with loopviz.tracing(module) as t:
        trainer(tmp_path, max_epochs=1).fit(module, loader())
        trainer(tmp_path, max_epochs=1).fit(TinyModule(), loader())  # another module: not traced
    assert Counter(_firing_names(t))["training_step"] == 4
    assert list(t.loops) == ["fit"]


def test_options_lightning_cannot_record(tmp_path: Path) -> None:
    tr = trainer(tmp_path)
    for option in ("changes", "waits"):
        with pytest.raises(LoopvizError, match="fastai learners only"):
            loopviz.tracing(tr, **{option: True})
    with pytest.raises(LoopvizError, match="loop='train'"):
        loopviz.spec_of(tr, "train")


def test_reports_are_sane(runs: dict[str, Run]) -> None:
    t = runs["fit"].trace
    summary, by_cb = t.summary(), t.by_callback()
    assert {"optimizer_step", "training_step", "validation_step"} <= set(summary["name"])
    assert {"SpyCallback", "TinyModule"} == set(by_cb["callback"])
    assert str(t).startswith(f"Trace of {adapter.FRAMEWORK}:") and "fit" in str(t)
    data = summary[(summary["kind"] == "work") & (summary["name"] == "data")]
    assert len(data) and (data["count"] > 0).all()


def test_show_module_and_trainer(runs: dict[str, Run], capsys: pytest.CaptureFixture) -> None:
    run = runs["fit"]
    text = str(loopviz.show(run.module))
    for name in ("configure_optimizers", "training_step", "on_train_epoch_end", "TinyModule", "SpyCallback"):
        assert name in text
    mermaid = str(loopviz.show(run.trainer, fmt="mermaid"))
    assert "flowchart" in mermaid or "graph" in mermaid
    assert "optimizer_step" in loopviz.show(run.trainer, fmt="graphviz").source
    assert "on_test_batch_start" in str(loopviz.show(run.trainer, loop="test"))


def test_show_a_module_alone_uses_a_default_trainer() -> None:
    spec = loopviz.spec_of(TinyModule())
    defaults = [type(cb).__name__ for cb in pl.Trainer(logger=False, accelerator="cpu", devices=1).callbacks]
    assert [c.cls for c in spec.callbacks] == [*defaults, "TinyModule"]
    assert [h.callback.cls for h in spec.event("on_train_epoch_end").handlers][-2:] == ["TinyModule", "ModelCheckpoint"]


def test_show_a_trainer_alone_and_previewed_callbacks(tmp_path: Path) -> None:
    spec = loopviz.spec_of(trainer(tmp_path), "fit", [SpyCallback()])
    assert any("No LightningModule" in note for note in spec.notes)
    assert [h.callback.cls for h in spec.event("training_step").handlers] == []
    assert [h.callback.cls for h in spec.event("on_train_batch_end").handlers] == ["SpyCallback"]
    with pytest.raises(LoopvizError, match="not a lightning.pytorch Callback"):
        loopviz.spec_of(trainer(tmp_path), "fit", [object()])


def make_module() -> TinyModule:
    return TinyModule()


def test_cli_show_and_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(cli, ["show", "tests.test_adapter_lightning:make_module"])
    assert shown.exit_code == 0, shown.output
    assert "training_step" in shown.output
    traced = CliRunner().invoke(cli, ["trace", "tests.test_adapter_lightning:make_module", "--epochs", "1",
                                      "--cbs", "tests.lightning_fixtures:SpyCallback"])
    assert traced.exit_code == 0, traced.output
    assert "optimizer_step" in traced.output and "SpyCallback" in traced.output
    assert list(tmp_path.iterdir()) == []
    assert isinstance(adapter.callback("Timer"), pl.Callback)
    with pytest.raises(LoopvizError, match="no Lightning Callback class"):
        adapter.callback("tests.lightning_fixtures:loader")


def test_a_wrapper_put_over_ours_stays_and_ours_goes_quiet(tmp_path: Path) -> None:
    original = call._call_callback_hooks
    tr = trainer(tmp_path, max_epochs=1)
    try:
        with loopviz.tracing(tr):
            ours = call._call_callback_hooks

            def theirs(*args: Any, **kwargs: Any) -> Any:
                return ours(*args, **kwargs)

            call._call_callback_hooks = theirs
        assert call._call_callback_hooks is theirs
        with loopviz.tracing(tr) as t:
            tr.fit(TinyModule(), loader())
        assert Counter(_firing_names(t))["on_train_epoch_start"] == 1
    finally:
        call._call_callback_hooks = original


class TrainerTrackingModule(TinyModule):
    """Counts its own training and validation steps per trainer: the spy of a module fitted by two trainers."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: Counter = Counter()

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.steps[id(self.trainer), "training_step"] += 1
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.steps[id(self.trainer), "validation_step"] += 1
        return super().validation_step(batch, batch_idx)


def module_calls(trace: Any, hook: str) -> int:
    table = trace.by_callback().query("callback == 'TrainerTrackingModule' and event == @hook")
    return int(table["calls"].sum())


@pytest.mark.parametrize("exit_order", ["first-first", "last-first"])
@pytest.mark.parametrize("fit_order", ["a-then-b", "b-then-a"])
def test_a_module_fitted_by_two_traced_trainers_is_left_as_it_was(tmp_path: Path, exit_order: str,
                                                                 fit_order: str) -> None:
    module = TrainerTrackingModule()
    trainers = [trainer(tmp_path / "a"), trainer(tmp_path / "b")]
    tracers = [adapter.trace(each) for each in trainers]
    traces = [tracer.__enter__() for tracer in tracers]
    for each in (trainers if fit_order == "a-then-b" else trainers[::-1]):
        each.fit(module, loader(), loader(8))
    for tracer in (tracers if exit_order == "first-first" else tracers[::-1]):
        tracer.__exit__(None, None, None)
    untraced = TrainerTrackingModule()  # what two fits leave on a module without loopviz (Lightning adds _hparams...)
    for each in (trainer(tmp_path / "c"), trainer(tmp_path / "d")):
        each.fit(untraced, loader(), loader(8))
    assert vars(module).keys() == vars(untraced).keys()
    assert not any(hook in vars(module) for hook in ("training_step", "validation_step", "on_train_epoch_end"))
    for hook in ("training_step", "validation_step"):
        assert [module_calls(t, hook) for t in traces] == [module.steps[id(each), hook] for each in trainers]
    assert instrument.installed() == []


def test_a_trace_never_exited_ends_when_its_trainer_and_module_are_collected(tmp_path: Path) -> None:
    import gc
    import weakref

    module = TrainerTrackingModule()
    fitter = trainer(tmp_path)
    t = adapter.trace(fitter).__enter__()
    fitter.fit(module, loader(), loader(8))
    steps = sum(count for (_, hook), count in module.steps.items() if hook == "training_step")
    gone = [weakref.ref(fitter), weakref.ref(module)]
    del fitter, module
    gc.collect()
    assert [ref() for ref in gone] == [None, None], "the trace kept its trainer or module alive"
    assert instrument.installed() == [] and all(vars(call)[name] is getattr(call, name) for name in NAMES)
    assert not any(getattr(vars(call)[name], "__loopviz_wrapper__", False) for name in NAMES)
    assert not t.recording_now and module_calls(t, "training_step") == steps == 8


def _all_firings(t: Any) -> Counter:
    """Firings per event, those past the record cap (kept as aggregates) included."""
    found = Counter(_firing_names(t))
    for aggregates in (t.data.overflow_firings, t.data.overflow_nested):
        for (_, event, _), aggregate in aggregates.items():
            found[t.data.events[event]] += aggregate.count
    return found


@pytest.mark.parametrize("bound, caps", [(3, {}), (5, {"max_firings": 40, "max_calls": 25})])
def test_rows_packed_every_few_and_past_the_caps_count_what_lightning_ran(tmp_path: Path, monkeypatch, bound: int,
                                                                          caps: dict[str, int]) -> None:
    # rows are written in the tracer's frame until the recorder's bound, then by the recorder's full path: a bound of a
    # few rows (and caps) makes every firing cross between the two
    from loopviz.trace import record

    monkeypatch.setattr(record, "PENDING_ROWS", bound)
    spy_cb = SpyCallback()
    tr = trainer(tmp_path, [spy_cb])
    with spying() as seen, loopviz.tracing(tr, **caps) as t:
        tr.fit(TinyModule(), loader(), loader())
    assert _all_firings(t) == seen.counts()
    kept = t.calls_df()
    assert len(kept) == min(caps.get("max_calls", 10 ** 9), sum(seen.calls().values()))
    assert len(kept) + t.data.dropped_calls == sum(seen.calls().values())
    firings = t.firings_df()
    assert (firings["end"] >= firings["start"]).all() and (firings["status"].astype(str) == "ok").all()


class ModelTrainModule(TinyModule):
    """Overrides on_validation_model_train and on_train_epoch_start, both turned off on the instance below."""

    def on_validation_model_train(self) -> None:
        super().on_validation_model_train()

    def on_train_epoch_start(self) -> None:
        self.seen.append("on_train_epoch_start")


def test_a_hook_set_to_none_is_no_handler_as_lightning_says(tmp_path: Path) -> None:
    from lightning.pytorch.utilities.model_helpers import is_overridden

    module = ModelTrainModule()
    module.on_validation_model_train = None  # Lightning's own way to turn a hook off
    module.on_train_epoch_start = None
    assert not is_overridden("on_validation_model_train", module)  # (Lightning agrees)
    run_trainer = trainer(tmp_path)
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    assert "on_validation_model_train" not in spec.event_names()
    assert not [h for ev in spec.events() if ev.name == "on_train_epoch_start" for h in ev.handlers
                if h.callback.cls == "ModelTrainModule"]
    called: list[str] = []
    record_hooks(module, pl.LightningModule, called)  # (wraps the class's hooks; the two set to None stay off)
    with spying() as spy:
        with loopviz.tracing(run_trainer) as t:
            run_trainer.fit(module, loader(), loader())
    assert "on_validation_model_train" not in spy.names() and "on_validation_model_train" not in _firing_names(t)
    assert "on_train_epoch_start" not in module.seen and "on_train_epoch_start" not in called
    assert [name for name in dict.fromkeys(called) if name in spec.event_names()] == [
        name for name in spec.event_names() if name in called]


def test_validation_on_a_batch_that_only_accumulates_skips_the_zero_grad_and_the_view_says_so(tmp_path: Path) -> None:
    called: list[str] = []
    module = record_hooks(TinyModule(), pl.LightningModule, called)
    run_trainer = trainer(tmp_path, [HookedCallback(called)], accumulate_grad_batches=2, val_check_interval=1,
                          limit_train_batches=4, max_epochs=1, num_sanity_val_steps=0)
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    run_trainer.fit(module, loader(), loader())
    names = [name.split(".")[-1] for name in called]
    validations = names.count("on_validation_model_eval")
    assert validations == 4 and names.count("on_validation_model_zero_grad") == 2  # batches 1 and 3 step
    event = next(ev for ev in spec.events() if ev.name == "on_validation_model_zero_grad")
    assert "skipped when validation falls on a batch that only accumulates" in event.description


class EndsEpochModule(ScheduledModule):
    """Ends each epoch at its second batch: on_train_batch_start returns -1."""

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
        return -1 if batch_idx == 1 else None


def test_on_train_batch_start_returning_minus_one_ends_the_epoch_as_the_view_says_it_does(tmp_path: Path) -> None:
    called: list[str] = []
    module = record_hooks(EndsEpochModule(), pl.LightningModule, called)
    run_trainer = trainer(tmp_path, [HookedCallback(called)], max_epochs=1, num_sanity_val_steps=0)
    run_trainer.fit(module, loader(), loader())
    spec = adapter.lightning_spec(run_trainer, module, "fit")  # (its LR schedulers are known once it has run)
    names = [name.split(".")[-1] for name in called]
    after = [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]
    second = [i for i, name in enumerate(after) if name == "on_train_batch_start"][1]
    event = next(ev for ev in spec.events() if ev.name == "on_train_batch_start")
    assert ("Returning -1 ends the epoch: the rest of this batch, its on_train_batch_end and this epoch's validation "
            "are skipped, the 'step' LR schedulers still step (lr_scheduler_step), then on_train_epoch_end.") in \
        event.description
    assert after[second + 1:second + 3] == ["lr_scheduler_step", "on_train_epoch_end"]  # as the view says
    assert "on_validation_start" not in after  # validation skipped


def test_a_module_before_any_fit_says_which_default_trainer_it_assumed_and_takes_yours(tmp_path: Path) -> None:
    module = TinyModule()
    assumed = adapter.loop_spec(module)  # attached to no trainer: a default Trainer() is assumed, and said
    note = next(n for n in assumed.notes if "a default Trainer() is assumed" in n)
    assert "ModelCheckpoint" in note and "loopviz.show(trainer, model=model)" in note
    mine = trainer(tmp_path)  # (progress bar, model summary and checkpointing off)
    spec = loopviz.show  # the user's trainer, with the module it will run
    text = str(spec(mine, model=module))
    assert "ModelCheckpoint" not in text and "configure_optimizers: [TinyModule]" in text
    assert not any("a default Trainer() is assumed" in n for n in adapter.loop_spec(mine, model=module).notes)
    with pytest.raises(LoopvizError, match="model= goes with a Trainer"):
        adapter.loop_spec(module, model=TinyModule())
    with pytest.raises(LoopvizError, match="model must be a LightningModule"):
        adapter.loop_spec(mine, model="not a module")


def test_a_checkpoint_saved_after_validation_comes_before_the_model_goes_back_to_train(runs: dict[str, Run]) -> None:
    run = runs["checkpoint_then_train_mode"]
    calls = run.hook_calls()
    end = calls.index("on_validation_end", calls.index("on_train_start"))  # the first validation inside training
    # ModelCheckpoint saves inside its on_validation_end (the callbacks' part of the event), before the module's
    # on_validation_end; the model goes back to train mode after the whole event
    assert calls[end + 1:end + 5] == ["state_dict", "on_save_checkpoint", "on_validation_end", "on_validation_model_train"]
    train_batch = next(p for p in run.spec.phases[0].phases() if p.name == "train_batch")
    validation = next(p for p in train_batch.steps if isinstance(p, Phase) and p.name == "validation")
    names = _spec_events(validation.steps)
    assert names[names.index("on_validation_end") + 1:] == ["state_dict", "on_save_checkpoint", "on_validation_model_train"]


class TwoOptimizers(TinyModule):
    """Manual optimization with two optimizers: two backward passes and two steps per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def configure_optimizers(self) -> Any:
        return [torch.optim.SGD(self.net[0].parameters(), lr=0.1), torch.optim.SGD(self.net[2].parameters(), lr=0.1)]

    def training_step(self, batch: Any, batch_idx: int) -> None:
        for opt in self.optimizers():
            opt.zero_grad()
            self.manual_backward(super().training_step(batch, batch_idx))
            opt.step()


def test_manual_optimization_hooks_fire_once_per_call_as_the_view_says(tmp_path: Path) -> None:
    called: list[str] = []
    module = record_hooks(TwoOptimizers(), pl.LightningModule, called)
    run_trainer = trainer(tmp_path, [HookedCallback(called)], max_epochs=1, limit_train_batches=2,
                          num_sanity_val_steps=0, limit_val_batches=0)
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    run_trainer.fit(module, loader(), loader())
    module_calls = Counter(name for name in called if "." not in name)
    assert module_calls["on_before_backward"] == module_calls["backward"] == module_calls["on_after_backward"] == 4
    assert module_calls["on_before_optimizer_step"] == 4 and module_calls["training_step"] == 2  # 2 batches
    manual = next(p for p in spec.phases[0].phases() if p.name == "manual")
    described = {ev.name: ev.description for ev in manual.steps}
    assert "once per self.manual_backward(loss) call" in described["on_before_backward"]
    assert "once per optimizer.step() call" in described["on_before_optimizer_step"]
    assert [ev.name for ev in manual.steps] == ["training_step", "on_before_backward", "backward",
                                                  "on_after_backward", "on_before_optimizer_step"]


def _recorded(called: list[str]) -> list[str]:
    """The recorder's calls, a callback's and the module's calls of one hook as one, less what the view leaves out."""
    names = [name.split(".")[-1] for name in called if name.split(".")[-1] not in NOT_SHOWN]
    return [name for i, name in enumerate(names) if i == 0 or names[i - 1] != name]


def test_validation_every_second_epoch_runs_as_the_epoch_in_the_view(tmp_path: Path) -> None:
    called: list[str] = []
    run_trainer = trainer(tmp_path, [HookedCallback(called)], max_epochs=2, check_val_every_n_epoch=2)
    module = record_hooks(TinyModule(), pl.LightningModule, called)
    run_trainer.fit(module, loader(), loader())
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    epoch = next(p for p in spec.phases[0].phases() if p.name == "epoch")
    validation = next(p for p in epoch.phases() if p.name == "validation")
    assert "check_val_every_n_epoch=2" in validation.note
    calls = _recorded(called)
    starts = [i for i, name in enumerate(calls) if name == "on_train_epoch_start"]
    first, second = calls[starts[0]:starts[1]], calls[starts[1]:calls.index("on_train_end")]
    assert "on_validation_start" not in first  # the first epoch does not validate
    assert list(dict.fromkeys(second)) == list(dict.fromkeys(_spec_events(epoch.steps)))  # the second, as drawn


def test_a_callback_that_raises_ends_the_fit_with_on_exception_as_the_view_says(tmp_path: Path) -> None:
    called: list[str] = []
    run_trainer = trainer(tmp_path, [HookedCallback(called), Raises()])
    module = record_hooks(TinyModule(), pl.LightningModule, called)
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    with pytest.raises(RuntimeError, match="a callback's own error"):
        with loopviz.tracing(run_trainer) as t:
            run_trainer.fit(module, loader(), loader())
    calls = _recorded(called)
    assert "an exception calls the callbacks' on_exception, then ends fit" in spec.phases[0].note
    assert calls[-2:] == ["on_train_batch_end", "on_exception"]  # no teardown, no on_fit_end
    events = spec.event_names()
    assert list(dict.fromkeys(calls[:-1])) == events[:events.index("on_train_batch_end") + 1]
    f = t.firings_df()
    assert list(f["event"])[-2:] == ["on_train_batch_end", "on_exception"]
    assert list(f["status"])[-2] != "ok"


def test_a_mid_epoch_checkpoint_resumes_inside_its_epoch_as_the_view_says(tmp_path: Path) -> None:
    first = trainer(tmp_path / "first", [ModelCheckpoint(every_n_train_steps=2, save_top_k=-1), HookedCallback([])],
                    max_epochs=1, enable_checkpointing=True)
    first.fit(TinyModule(), loader(), loader())
    ckpt = str(next((tmp_path / "first").rglob("*step=2.ckpt")))  # saved after the epoch's second of four batches
    called: list[str] = []
    module = record_hooks(TinyModule(), pl.LightningModule, called)
    run_trainer = trainer(tmp_path, [HookedCallback(called)], max_epochs=2)
    spec = adapter.lightning_spec(run_trainer, module, "fit", ckpt_path=ckpt)
    run_trainer.fit(module, loader(), loader(), ckpt_path=ckpt)
    restore = next(p for p in spec.phases[0].phases() if p.name == "restore")
    assert "A checkpoint saved mid-epoch resumes inside its epoch: no sanity check, and that epoch's " \
           "on_train_epoch_start is not called" in restore.note
    calls = _recorded(called)
    assert calls[calls.index("setup") + 1:calls.index("configure_optimizers")] == ["on_load_checkpoint", "load_state_dict"]
    assert "on_sanity_check_start" not in calls
    assert calls.count("on_train_epoch_start") == 1 and calls.count("on_train_epoch_end") == 2
    assert calls.index("on_train_batch_start") < calls.index("on_train_epoch_start")  # the resumed epoch's batches
    assert adapter.lightning_spec(run_trainer, module, "fit").event_names() == spec.event_names()  # (read back)


def test_ckpt_path_must_be_a_path() -> None:
    with pytest.raises(LoopvizError, match="ckpt_path must be the path of a checkpoint"):
        adapter.lightning_spec(None, TinyModule(), "fit", ckpt_path=3)


class ForwardModule(TinyModule):
    """Calls its own forward in its steps, as most modules do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)


def test_the_module_calls_inside_the_loop_are_where_the_view_says(tmp_path: Path) -> None:
    """Lightning's own recorder also records the module's forward, train and zero_grad (torch.nn.Module's): each where
    the view puts it, as a step of Lightning's own (zero_grad) or in the description of the hook that calls it."""
    called: list[str] = []
    module = record_hooks(ForwardModule(), pl.LightningModule, called)
    for name in ("forward", "train", "zero_grad"):  # (eval is train(False))
        original = getattr(module, name)

        def call(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            called.append(_name + ("(False)" if _name == "train" and args == (False,) else ""))
            return _original(*args, **kwargs)

        object.__setattr__(module, name, call)
    run_trainer = trainer(tmp_path, [HookedCallback(called)], max_epochs=1, limit_train_batches=2, gradient_clip_val=0.5)
    spec = adapter.lightning_spec(run_trainer, module, "fit")
    run_trainer.fit(module, loader(), loader())
    calls = [name.split(".")[-1] for name in called]
    fit = spec.phases[0].steps
    names = [getattr(step, "name", None) for step in fit]
    assert names[names.index("on_fit_start") + 1] == "zero_grad"  # a step of Lightning's own, after on_fit_start
    assert calls[calls.index("on_fit_start") + 1:calls.index("on_fit_start") + 3] == ["on_fit_start", "zero_grad"]
    described = {ev.name: ev.description for ev in spec.events()}
    assert calls[calls.index("on_validation_model_eval") + 1] == "train(False)"
    assert "calls model.eval() (the module's train(False))" in described["on_validation_model_eval"]
    assert calls[calls.index("configure_gradient_clipping") + 1] == "clip_gradients"
    assert "calls self.clip_gradients(optimizer, gradient_clip_val=0.5)" in described["configure_gradient_clipping"]
    assert calls[calls.index("training_step") + 1] == "forward"
    assert "your forward runs inside it" in described["training_step"]
    assert calls[calls.index("on_validation_model_zero_grad", calls.index("on_train_start")) + 1] == "zero_grad"
    assert "Gradients are zeroed before validating" in described["on_validation_model_zero_grad"]
