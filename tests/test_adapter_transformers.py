"""The Hugging Face Trainer adapter against reality: tiny BERT trainers (built from a config, nothing downloaded) run
under a trace and under an independent spy of `callback_handler.call_event` (tests/hf_fixtures.py, no loopviz).
For each configuration (gradient accumulation, evaluation every N steps, early stopping, a callback stopping
training, epoch strategies) the static spec, expanded for the run's epochs and steps, gives the exact event
sequence the spy saw; the trace records the same firings, and its callback calls are the real handler calls."""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch

pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from transformers import EarlyStoppingCallback, TrainerCallback  # noqa: E402

import loopviz  # noqa: E402
from loopviz.adapters import adapter_for  # noqa: E402
from loopviz.adapters import transformers as hf  # noqa: E402
from loopviz.cli import cli  # noqa: E402
from loopviz.errors import LoopvizError  # noqa: E402
from loopviz.generic import handler  # noqa: E402
from loopviz.model import Event, LoopSpec, Phase, Work  # noqa: E402
from tests.hf_fixtures import Boom, LogCounter, SaveEvery, Spy, StopAt, TokenData, overrides, tiny_trainer  # noqa: E402

BATCH, N_EVAL = 4, 8


@dataclass
class Case:
    """A trainer configuration, and when (at which global step) a callback stops its training, if one does."""

    args: dict[str, Any]
    n_train: int = 16
    callbacks: Callable[[], list[Any]] = list
    stop_at: int | None = None
    saves_every: int | None = None  # a callback sets control.should_save every this many steps itself


CASES = {
    "accumulation": Case(dict(gradient_accumulation_steps=3, num_train_epochs=2, logging_strategy="steps",
                              logging_steps=1)),
    "eval_steps": Case(dict(eval_strategy="steps", eval_steps=2, logging_strategy="steps", logging_steps=3,
                            save_strategy="steps", save_steps=4), n_train=28),
    "early_stopping": Case(dict(eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                                load_best_model_at_end=True, metric_for_best_model="loss", num_train_epochs=2),
                           n_train=24, callbacks=lambda: [EarlyStoppingCallback(1, early_stopping_threshold=1e9)],
                           stop_at=2),
    "user_stop": Case(dict(logging_strategy="steps", logging_steps=1, num_train_epochs=2, gradient_accumulation_steps=2),
                      n_train=24, callbacks=lambda: [StopAt(2)], stop_at=2),
    "callback_saves": Case(dict(logging_strategy="steps", logging_steps=2, num_train_epochs=2), n_train=16,
                           callbacks=lambda: [SaveEvery(3)], saves_every=3),
    "epoch_strategy": Case(dict(eval_strategy="epoch", save_strategy="epoch", logging_strategy="epoch",
                                num_train_epochs=2), n_train=8),
}


@dataclass
class Run:
    """One traced and spied `trainer.train()`."""

    trainer: Any
    spec: LoopSpec
    events: list[str]
    calls: list[tuple[str, str]]
    trace: Any


@pytest.fixture(scope="module", params=list(CASES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    case = CASES[request.param]
    trainer = tiny_trainer(tmp_path_factory.mktemp(request.param), case.callbacks(), n_train=case.n_train, **case.args)
    spec = hf.trainer_spec(trainer)
    with hf.trace_trainer(trainer) as t, Spy(trainer) as spy:
        trainer.train()
    return Run(trainer, spec, spy.events, spy.calls, t)


# -- the spec, expanded for a run's numbers, against what transformers really dispatched ----------


def _strategy(args: Any, kind: str) -> str:
    return str(getattr(getattr(args, f"{kind}_strategy"), "value", getattr(args, f"{kind}_strategy")))


def _flags(args: Any, level: str, step: int, last: int, case: Case) -> set[str]:
    """The parts of `_maybe_log_save_evaluate` that run, as DefaultFlowCallback's rules decide them (read from its
    documented behaviour: steps strategies every N steps, evaluation and saving also at the last step), and the
    case's own callback that asks for a checkpoint."""
    if level == "epoch":
        return {kind for kind in ("logging", "eval", "save") if _strategy(args, kind) == "epoch"}
    flags = {"save"} if case.saves_every and step % case.saves_every == 0 else set()
    if _strategy(args, "logging") == "steps" and step % args.logging_steps == 0:
        flags.add("logging")
    for kind, every in (("eval", args.eval_steps), ("save", args.save_steps)):
        if _strategy(args, kind) == "steps" and (step % every == 0 or step == last):
            flags.add(kind)
    return flags


def expand(spec: LoopSpec, trainer: Any, case: Case) -> list[str]:
    """The event sequence the spec describes for this trainer's run: its phases repeated by the run's numbers of
    epochs, optimizer steps and micro-batches, its conditional parts kept where the strategies set their flags."""
    args = trainer.args
    batches, gas = math.ceil(case.n_train / BATCH), args.gradient_accumulation_steps
    updates = math.ceil(batches / gas)
    micro = [gas] * (updates - 1) + [batches - gas * (updates - 1)]
    last = updates * int(args.num_train_epochs)
    stop = case.stop_at or last
    out: list[str] = []
    state = {"step": 0}

    def walk(steps: list[Any], ctx: dict[str, Any]) -> None:
        for step in steps:
            if isinstance(step, Event):
                if ctx.get("parent") == "log_save":
                    kind = {"on_log": "logging", "on_save": "save"}[step.name]
                    if kind not in ctx["flags"]:
                        continue
                out.append(step.name)
            elif isinstance(step, Phase):
                phase_of(step, {**ctx, "parent": step.name})

    def phase_of(p: Phase, ctx: dict[str, Any]) -> None:
        if p.name == "epoch":
            for _ in range(int(args.num_train_epochs)):
                if state["step"] >= stop:
                    break
                walk(p.steps, {**ctx, "level": "epoch"})
        elif p.name == "step":
            for n in micro:
                state["step"] += 1
                walk(p.steps, {**ctx, "level": "steps", "micro": n})
                if state["step"] >= stop:
                    break
        elif p.name == "substep":
            for _ in range(ctx["micro"] - 1):
                walk(p.steps, ctx)
        elif p.name == "prediction":
            for _ in range(math.ceil(N_EVAL / BATCH)):
                walk(p.steps, ctx)
        elif p.name == "log_save":
            walk(p.steps, {**ctx, "flags": _flags(args, ctx["level"], state["step"], last, case)})
        elif p.name == "create":  # Trainer.__init__ fired on_init_end, before the spy was put on the trainer
            return
        elif p.name == "evaluate" and ctx.get("flags") is not None:
            if "eval" in ctx["flags"]:
                walk(p.steps, ctx)
        else:
            walk(p.steps, ctx)

    walk(spec.phases, {})
    return out


def test_spec_expanded_is_the_real_event_sequence(run: Run, request: pytest.FixtureRequest) -> None:
    case = CASES[request.node.callspec.params["run"]]
    assert expand(run.spec, run.trainer, case) == run.events


def test_spec_events_are_those_that_fire(run: Run) -> None:
    assert set(run.spec.event_names()) - {"on_init_end"} == set(run.events)  # (on_init_end: in __init__, below)


class InitSeen(TrainerCallback):
    """Counts its on_init_end calls."""

    def __init__(self) -> None:
        self.inits = 0

    def on_init_end(self, args, state, control, **kwargs):
        self.inits += 1


def test_on_init_end_fires_once_in_init_and_the_view_shows_it_first(tmp_path: Path) -> None:
    seen = InitSeen()
    trainer = tiny_trainer(tmp_path, [seen])
    assert seen.inits == 1  # fired by Trainer.__init__, where the view's Create phase puts it
    spec = hf.trainer_spec(trainer)
    create = spec.phases[0]
    assert create.name == "create" and [ev.name for ev in create.steps] == ["on_init_end"]
    assert [h.callback.cls for h in create.steps[0].handlers] == ["InitSeen"]
    later = InitSeen()
    trainer.add_callback(later)
    trainer.train()
    assert later.inits == 0 and seen.inits == 1  # a callback added later never receives it, as the view says
    assert "callbacks added later (add_callback) never receive it" in create.steps[0].description


def test_spec_handlers_are_the_callbacks_overriding_each_event(run: Run) -> None:
    real: dict[str, set[str]] = {}
    for event, cls in run.calls:
        real.setdefault(event, set()).add(cls)
    for ev in run.spec.events():
        assert [h.callback.cls for h in ev.handlers] == [type(cb).__name__ for cb in run.trainer.callback_handler.callbacks
                                                         if overrides(cb, ev.name)]
        assert {h.callback.cls for h in ev.handlers} == real.get(ev.name, set())


def test_trace_firings_are_the_real_events(run: Run) -> None:
    assert run.trace.firings_df()["event"].astype(str).tolist() == run.events
    counts = run.trace.summary().query("kind == 'event'").groupby("name")["count"].sum().to_dict()
    assert counts == dict(Counter(run.events))


def test_trace_callback_calls_are_the_real_handler_calls(run: Run) -> None:
    calls = run.trace.calls_df()
    firings = run.trace.firings_df()
    traced = Counter(zip(firings.loc[calls["firing"], "event"].astype(str), calls["callback"].astype(str)))
    assert traced == Counter(run.calls)
    n_callbacks = len(run.trainer.callback_handler.callbacks)
    assert run.trace.no_handler_calls == len(run.events) * n_callbacks - len(run.calls)


def test_trace_positions_and_modes(run: Run) -> None:
    firings = run.trace.firings_df()
    steps = firings[firings["event"] == "on_step_end"]
    assert steps["iter"].tolist() == list(range(1, len(steps) + 1))
    assert set(firings.loc[firings["event"] == "on_prediction_step", "phase"]) <= {"valid"}
    assert set(firings.loc[firings["event"] == "on_optimizer_step", "phase"]) == {"train"}
    epochs_begun = (firings["event"] == "on_epoch_begin").cumsum() - 1  # the epoch each firing is in, by the events
    assert firings["epoch"].tolist() == epochs_begun.clip(lower=0).tolist()
    assert run.trace.loops == ["train"]


def test_trace_names_the_work(run: Run) -> None:
    work = set(run.trace.summary().query("kind == 'work'")["name"])
    assert {"setup", "data", "forward+backward", "optimizer step", "scheduler+zero_grad", "finish"} <= work
    assert "between events" not in work


def test_trace_annotates_the_spec(run: Run) -> None:
    annotated = loopviz.annotate(run.spec, run.trace)
    traced = [ev for ev in annotated.events() if ev.name != "on_init_end"]  # (fired in __init__, before any trace)
    assert all(ev.timing is not None for ev in traced)
    assert all(h.timing is not None for ev in traced for h in ev.handlers)
    train = next(p for p in annotated.phases if p.name == "train")
    timed = {w.name for _, w in train.walk() if isinstance(w, Work) and w.timing is not None}
    assert {"data", "forward+backward", "optimizer step", "scheduler+zero_grad", "finish"} <= timed
    assert "Start Train" in str(loopviz.show_loop(annotated))


def test_spec_shows_the_configured_strategies() -> None:
    trainer = tiny_trainer("unused", eval_strategy="steps", eval_steps=10, logging_strategy="epoch",
                           gradient_accumulation_steps=3)
    text = str(loopviz.show(trainer, verbose=True, width=200))
    assert "eval_strategy='steps': every 10 steps" in text
    assert "logging_strategy='epoch': every epoch" in text
    assert "gradient_accumulation_steps=3" in text
    assert "Start Evaluate (every 10 steps)" in text
    assert "on_substep_end" in text
    plain = hf.trainer_spec(tiny_trainer("unused"))
    assert "on_substep_end" not in plain.event_names() and "on_evaluate" not in plain.event_names()


# -- handlers, previews, loops ----------------------------------------------------------------------


def test_base_no_ops_are_not_handlers() -> None:
    counter = LogCounter()
    assert handler(counter, "on_step_end") is not None  # without the base, TrainerCallback's no-op is found
    assert handler(counter, "on_step_end", base=TrainerCallback) is None
    assert handler(counter, "on_log", base=TrainerCallback).doc == "Counts the logs it is sent."
    spec = hf.trainer_spec(tiny_trainer("unused"), cbs=[counter])
    assert [h.callback.cls for h in spec.event("on_log").handlers] == ["PrinterCallback", "LogCounter"]
    assert all(h.callback.cls != "LogCounter" for e in spec.events() if e.name != "on_log" for h in e.handlers)


def test_previewed_callbacks_come_last_and_are_not_attached() -> None:
    trainer = tiny_trainer("unused", eval_strategy="epoch")
    before = list(trainer.callback_handler.callbacks)
    spec = loopviz.spec_of(trainer, cbs=[EarlyStoppingCallback, StopAt(1)])
    assert [c.cls for c in spec.callbacks][-2:] == ["EarlyStoppingCallback", "StopAt"]
    assert [c.order for c in spec.callbacks] == list(range(len(spec.callbacks)))
    assert [h.callback.cls for h in spec.event("on_evaluate").handlers] == ["EarlyStoppingCallback"]
    assert trainer.callback_handler.callbacks == before


@pytest.mark.parametrize("loop, last", [("evaluate", "on_evaluate"), ("predict", "on_predict")])
def test_evaluate_and_predict_loops(loop: str, last: str, tmp_path: Any) -> None:
    trainer = tiny_trainer(tmp_path)
    spec = hf.trainer_spec(trainer, loop)
    with loopviz.tracing(trainer) as t, Spy(trainer) as spy:
        getattr(trainer, loop)(*([TokenData(N_EVAL, 2)] if loop == "predict" else []))
    expected = ["on_prediction_step"] * 2 + (["on_log"] if loop == "evaluate" else []) + [last]
    assert spy.events == expected
    assert set(spec.event_names()) == set(expected)
    assert t.loops == [loop]
    assert set(t.firings_df()["phase"]) == {"valid"}


def test_unknown_loop_and_options_are_clear_errors() -> None:
    trainer = tiny_trainer("unused")
    with pytest.raises(LoopvizError, match="train, evaluate, predict"):
        loopviz.show(trainer, loop="fit_one_cycle")
    for option in ("changes", "waits"):
        with pytest.raises(LoopvizError, match="fastai learners only"):
            loopviz.tracing(trainer, **{option: True})
    if not torch.cuda.is_available():  # on a GPU machine clock='cuda' is fine (this file passes there too)
        with pytest.raises(LoopvizError, match="CUDA"):
            loopviz.tracing(trainer, clock="cuda")
    with pytest.raises(LoopvizError, match="no TrainerCallback class Nope"):
        hf.callback("Nope")


# -- the trainer is left as it was --------------------------------------------------------------------


def _patchable(trainer: Any) -> dict[tuple[int, str], Any]:
    """What the instances a trace may patch hold under the names it patches (their own attributes only)."""
    objects = (trainer, trainer.callback_handler, *trainer.callback_handler.callbacks)
    return {(i, name): value for i, o in enumerate(objects) for name, value in vars(o).items()
            if name in (*hf.LOOPS, "call_event") or name.startswith("on_")}


def test_trace_leaves_the_trainer_as_it_was(tmp_path: Any) -> None:
    trainer = tiny_trainer(tmp_path, [LogCounter()], max_steps=2)
    own_evaluate = trainer.evaluate  # an instance attribute of the user's own, to be put back as it was
    trainer.evaluate = own_evaluate
    before = _patchable(trainer)
    with loopviz.tracing(trainer, clock="host") as t:
        assert vars(trainer.callback_handler)["call_event"] is not None and vars(trainer)["evaluate"] is not own_evaluate
        trainer.train()
    assert _patchable(trainer) == before and vars(trainer)["evaluate"] is own_evaluate
    assert t.n_firings > 0


def test_trace_leaves_the_trainer_as_it_was_when_train_raises(tmp_path: Any) -> None:
    trainer = tiny_trainer(tmp_path, [Boom()], num_train_epochs=2)
    before = _patchable(trainer)
    with pytest.raises(RuntimeError, match="boom"), loopviz.tracing(trainer) as t:
        trainer.train()
    assert _patchable(trainer) == before == {}
    firings = t.firings_df()
    assert firings["event"].astype(str).tolist()[-1] == "on_step_end"
    assert firings["status"].astype(str).tolist()[-1] == "error"
    assert t.loops == ["train"]


def test_trace_of_a_trace_is_refused() -> None:
    trainer = tiny_trainer("unused")
    with loopviz.tracing(trainer):
        with pytest.raises(LoopvizError, match="already being traced"):
            loopviz.tracing(trainer).__enter__()


# -- views, reports, the command line -------------------------------------------------------------------


def test_views_render(run: Run) -> None:
    text = str(loopviz.show(run.trainer))
    assert text.startswith("Start Create") and "Start Train" in text and "on_step_end    : [DefaultFlowCallback" in text
    assert "on_step_end" in str(loopviz.show(run.trainer, fmt="rich"))
    for loop in hf.LOOPS:
        assert "flowchart" in str(loopviz.show(run.trainer, loop=loop, fmt="mermaid"))
        assert "digraph" in loopviz.show(run.trainer, loop=loop, fmt="dot").source
    assert "control.should_training_stop" in str(loopviz.show(run.trainer, fmt="mermaid"))


def test_reports_are_sane(run: Run) -> None:
    t = run.trace
    assert str(t).startswith(f"Trace of transformers {hf.transformers.__version__}")
    summary = t.summary()
    tiling = summary[summary["kind"].isin(["event", "work"])]["pct"].sum()
    assert 99 <= tiling <= 101
    by_callback = t.by_callback()
    assert "DefaultFlowCallback" in set(by_callback["callback"].astype(str))
    assert (by_callback["calls"] == by_callback["ran"]).all()


def test_adapter_is_found() -> None:
    trainer = tiny_trainer("unused")
    assert adapter_for(trainer).name == "transformers"
    assert hf.loop_spec(trainer, next(iter(hf.LOOPS))).loop == "train"  # the command line's default loop
    with pytest.raises(LoopvizError, match="loop='fit': a Hugging Face Trainer has these loops: train, evaluate, "
                                           "predict"):
        hf.loop_spec(trainer, "fit")


def test_fit_trains_for_the_epochs_and_puts_the_trainer_back(tmp_path: Any) -> None:
    trainer = tiny_trainer(tmp_path, n_train=8)
    counter = LogCounter()
    with Spy(trainer) as spy:
        hf.fit(trainer, 3, [counter])
    assert spy.events.count("on_epoch_begin") == 3 and counter.logs == 1
    assert trainer.args.num_train_epochs == 1 and counter not in trainer.callback_handler.callbacks


def test_cli_show_and_trace() -> None:
    result = CliRunner().invoke(cli, ["show", "tests.hf_fixtures:cli_trainer", "--loop", "evaluate"])
    assert result.exit_code == 0, result.output
    assert "on_prediction_step" in result.output and "on_evaluate" in result.output
    result = CliRunner().invoke(cli, ["show", "tests.hf_fixtures:cli_trainer", "-f", "mermaid",
                                      "--cbs", "tests.hf_fixtures:LogCounter"])
    assert result.exit_code == 0, result.output
    assert "LogCounter" in result.output
    result = CliRunner().invoke(cli, ["trace", "tests.hf_fixtures:cli_trainer", "--epochs", "2",
                                      "--cbs", "transformers:PrinterCallback"])
    assert result.exit_code == 0, result.output
    assert "Trace of transformers" in result.output and "forward+backward" in result.output


class TrainerCounter(TrainerCallback):
    """Counts its own on_step_end calls per trainer (told apart by output_dir): the spy of a shared callback."""

    def __init__(self) -> None:
        self.steps: Counter = Counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps[args.output_dir] += 1


def counter_calls(trace: Any) -> int:
    table = trace.by_callback().query("callback == 'TrainerCounter'")
    return int(table["calls"].sum())


@pytest.mark.parametrize("exit_order", ["first-first", "last-first"])
@pytest.mark.parametrize("train_order", ["a-then-b", "b-then-a"])
def test_a_callback_shared_by_two_traced_trainers_is_left_as_it_was(tmp_path: Any, exit_order: str,
                                                                    train_order: str) -> None:
    import gc

    shared = TrainerCounter()
    trainers = [tiny_trainer(tmp_path / "a", callbacks=[shared]), tiny_trainer(tmp_path / "b", callbacks=[shared])]
    before = dict(vars(shared))
    tracers = [hf.trace_trainer(trainer) for trainer in trainers]
    traces = [tracer.__enter__() for tracer in tracers]
    for trainer in (trainers if train_order == "a-then-b" else trainers[::-1]):
        trainer.train()
    for tracer in (tracers if exit_order == "first-first" else tracers[::-1]):
        tracer.__exit__(None, None, None)
    gc.collect()
    assert vars(shared).keys() == before.keys() and vars(shared)["steps"] is before["steps"]
    assert [counter_calls(t) for t in traces] == [shared.steps[t.args.output_dir] for t in trainers] == [4, 4]


def test_a_trace_never_exited_ends_when_its_trainer_is_collected(tmp_path: Any) -> None:
    import gc
    import weakref

    from loopviz.trace import instrument

    shared = TrainerCounter()
    trainer = tiny_trainer(tmp_path, callbacks=[shared])
    t = hf.trace_trainer(trainer).__enter__()
    trainer.train()
    gone = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert gone() is None, "the trace kept its trainer alive"
    assert instrument.installed() == [] and "on_step_end" not in vars(shared)
    assert not t.recording_now and counter_calls(t) == sum(shared.steps.values()) == 4


@pytest.mark.parametrize("bound, caps", [(3, {}), (4, {"max_firings": 12, "max_calls": 6})])
def test_rows_packed_every_few_and_past_the_caps_count_what_the_trainer_ran(tmp_path: Any, monkeypatch, bound: int,
                                                                            caps: dict[str, int]) -> None:
    # the dispatch writes rows in its own frame until the recorder's bound, then takes the recorder's full path: a
    # bound of a few rows (and caps) makes every firing cross between the two
    from loopviz.trace import record

    monkeypatch.setattr(record, "PENDING_ROWS", bound)
    trainer = tiny_trainer(tmp_path, [StopAt(99)], n_train=16, logging_strategy="steps", logging_steps=1)
    with hf.trace_trainer(trainer, **caps) as t, Spy(trainer) as spy:
        trainer.train()
    kept = t.firings_df()["event"].astype(str).tolist()
    assert kept == spy.events[:len(kept)] and len(kept) == min(caps.get("max_firings", 10 ** 9), len(spy.events))
    assert t.n_firings + t.data.dropped_firings == len(spy.events)
    assert t.n_calls + t.data.dropped_calls == len(spy.calls)
    assert t.n_calls == min(caps.get("max_calls", 10 ** 9), len(spy.calls))
    n_callbacks = len(trainer.callback_handler.callbacks)
    assert t.no_handler_calls == len(spy.events) * n_callbacks - len(spy.calls)
    calls, firings = t.calls_df(), t.firings_df()
    kept_calls = list(zip(firings.loc[calls["firing"], "event"].astype(str), calls["callback"].astype(str)))
    assert kept_calls == spy.calls[:len(calls)]


def test_a_dict_of_eval_datasets_is_one_evaluation_each_as_the_view_says(tmp_path: Path) -> None:
    from tests.hf_fixtures import TokenData

    trainer = tiny_trainer(tmp_path, n_train=8, eval_strategy="epoch")
    trainer.eval_dataset = {"near": TokenData(4, seed=1), "far": TokenData(4, seed=2)}
    spec = hf.trainer_spec(trainer)
    evaluate = next(p for p in spec.phases[1].phases() if p.name == "evaluate")
    assert evaluate.repeat is not None and "near, far" in evaluate.repeat
    with Spy(trainer) as spy:
        trainer.train()
    assert spy.events.count("on_evaluate") == 2  # one epoch, one evaluation per dataset
    logged = [entry for entry in trainer.state.log_history if any(key.startswith("eval_") for key in entry)]
    assert {key.split("_")[1] for entry in logged for key in entry if key.startswith("eval_")} >= {"near", "far"}


def test_a_callback_that_asks_for_checkpoints_is_read_from_its_source(tmp_path: Path) -> None:
    """save_strategy='no', yet SaveEvery sets control.should_save: the view shows the save after each step and says
    who asks for it (the run against the Trainer's own events: the callback_saves case above)."""
    spec = hf.trainer_spec(tiny_trainer(tmp_path, [SaveEvery(3)], save_strategy="no"))
    save = next(ev for ev in spec.events() if ev.name == "on_save")
    assert "save_strategy='no'; when SaveEvery.on_step_end sets control.should_save" in save.description
    assert "on_save" not in hf.trainer_spec(tiny_trainer(tmp_path, [StopAt(2)], save_strategy="no")).event_names()
    assert hf.flag_setters([SaveEvery(3), StopAt(2)]) == {("save", "steps"): ["SaveEvery.on_step_end"]}


def test_a_callbacks_order_is_its_place_in_the_trainers_list_in_the_legend_and_at_every_event(tmp_path: Path) -> None:
    spec = hf.trainer_spec(tiny_trainer(tmp_path, logging_strategy="steps", logging_steps=1))
    listed = {info.cls: info.order for info in spec.callbacks}
    assert listed == {"DefaultFlowCallback": 0, "PrinterCallback": 1}
    for event in spec.events():
        for handler in event.handlers:
            assert handler.callback.order == listed[handler.callback.cls], (event.name, handler.callback.cls)
