"""An adapter for the Hugging Face `transformers.Trainer`, built on `loopviz.generic`.

The Trainer dispatches every event by name through `trainer.callback_handler.call_event(event, args, state,
control, **kwargs)`, which calls `on_<event>` on every callback in `callback_handler.callbacks`, in that order;
`TrainerCallback`'s own methods are no-ops, so a callback handles an event only when its class overrides
`on_<event>`. Callbacks steer the loop through `TrainerControl` flags, not exceptions: `should_log`,
`should_evaluate` and `should_save` gate the log, evaluation and checkpoint after a step or an epoch
(DefaultFlowCallback sets them by the configured strategies); `should_epoch_stop` and `should_training_stop`
end the step loop after the current micro-batch, the latter the epoch loop too.

    spec = trainer_spec(trainer)                       # or loopviz.show(trainer, loop='evaluate')
    with trace_trainer(trainer) as t:                  # or loopviz.tracing(trainer)
        trainer.train()
"""
from __future__ import annotations

import functools
import importlib
import inspect
import re
import weakref
from typing import Any, Callable, Sequence

import transformers
from transformers import TrainerCallback

from loopviz.checks import check_bool
from loopviz.errors import LoopvizError
from loopviz.adapters.facts import cpu_facts, torch_loader_facts, weights_precision
from loopviz.adapters.torch_loader import torch_data_loop
from loopviz.adapters.transformers_cost import cost_measure
from loopviz.dataloop import DataLoop
from loopviz.generic import DispatchTracer, cancel, event, phase, work
from loopviz.generic import loop_spec as generic_loop_spec
from loopviz.model import Event, LoopSpec, Mode, Phase, Role, Step
from loopviz.trace.trace import Trace

__all__ = ["trainer_spec", "trace_trainer", "flag_setters", "LOOPS", "WORK_NAMES", "loop_spec", "trace", "fit", "callback"]

LOOPS = ("train", "evaluate", "predict")
FRAMEWORK = f"transformers {transformers.__version__}"

_DESCRIPTIONS = {
    "on_train_begin": "Training starts: trainer.state is a fresh TrainerState (max_steps, logging/eval/save steps "
                      "set); control.should_training_stop was reset.",
    "on_epoch_begin": "An epoch starts (state.epoch is its number); control.should_epoch_stop was reset.",
    "on_step_begin": "An optimizer step starts, before its first micro-batch; should_log, should_evaluate and "
                     "should_save were reset.",
    "on_substep_end": "A micro-batch's forward and backward are done; gradients accumulate (every micro-batch of "
                      "the step but the last).",
    "on_pre_optimizer_step": "Gradients are accumulated (and clipped to max_grad_norm); the optimizer has not "
                             "stepped yet.",
    "on_optimizer_step": "The optimizer stepped; gradients are not zeroed yet.",
    "on_step_end": "The step is done: scheduler stepped, gradients zeroed, state.global_step and state.epoch "
                   "advanced. DefaultFlowCallback sets should_log/should_evaluate/should_save here by the "
                   "strategies, and should_training_stop at max_steps.",
    "on_epoch_end": "The epoch is done (or stopped by should_epoch_stop/should_training_stop). DefaultFlowCallback "
                    "sets the flags of the epoch strategies here.",
    "on_train_end": "Training is done: final metrics logged, the best model loaded if load_best_model_at_end.",
    "on_prediction_step": "One batch of evaluation or prediction is done (kwarg eval_dataloader).",
    "on_evaluate": "Evaluation is done; kwarg metrics (eval_loss, eval_runtime...); control.should_evaluate was "
                   "reset. EarlyStoppingCallback sets should_training_stop here.",
    "on_predict": "Prediction is done; kwarg metrics (test_loss, test_runtime...).",
    "on_save": "A checkpoint was saved to args.output_dir; control.should_save was reset.",
}
# the work between two consecutive events, as the trace reports it
WORK_NAMES: dict[tuple[str, str], str] = {
    **{(before, "on_step_begin"): "data" for before in ("on_epoch_begin", "on_step_end", "on_log", "on_evaluate",
                                                        "on_save", "on_train_begin")},
    ("on_step_begin", "on_substep_end"): "forward+backward",
    ("on_substep_end", "on_substep_end"): "forward+backward",
    ("on_step_begin", "on_pre_optimizer_step"): "forward+backward",
    ("on_substep_end", "on_pre_optimizer_step"): "forward+backward",
    ("on_pre_optimizer_step", "on_optimizer_step"): "optimizer step",
    ("on_optimizer_step", "on_step_end"): "scheduler+zero_grad",
    **{(before, "on_log"): "log" for before in ("on_step_end", "on_epoch_end", "on_evaluate", "on_save")},
    **{(before, "on_prediction_step"): "evaluate" for before in ("on_step_end", "on_log", "on_epoch_end",
                                                                 "on_train_begin")},
    ("on_prediction_step", "on_prediction_step"): "prediction step",
    ("on_prediction_step", "on_log"): "metrics",
    ("on_prediction_step", "on_predict"): "metrics",
    ("on_log", "on_evaluate"): "evaluate end",
    **{(before, "on_save"): "save checkpoint" for before in ("on_step_end", "on_log", "on_evaluate", "on_epoch_end")},
    **{(before, "on_epoch_end"): "epoch end" for before in ("on_step_end", "on_log", "on_evaluate", "on_save",
                                                            "on_substep_end")},
    **{(before, "on_epoch_begin"): "next epoch" for before in ("on_epoch_end", "on_log", "on_evaluate", "on_save")},
    ("on_train_begin", "on_epoch_begin"): "start",
    ("on_log", "on_train_end"): "finish",
}
_BEGIN_END = ("on_train_begin", "on_train_end", "on_init_end")


def _value(option: Any) -> str:
    """An enum option of TrainingArguments as its string ('steps', 'epoch', 'no', 'best')."""
    return str(getattr(option, "value", option))


def _every(args: Any, kind: str) -> str:
    """When `kind` ('logging', 'eval', 'save') happens by its strategy: 'every 10 steps', 'every epoch', 'never'."""
    strategy = _value(getattr(args, f"{kind}_strategy"))
    if strategy == "steps":
        steps = getattr(args, f"{kind}_steps", None) or args.logging_steps
        if 0 < steps < 1:
            return f"every {steps:g} of max_steps"
        return "every step" if steps == 1 else f"every {steps:g} steps"
    return {"epoch": "every epoch", "no": "never", "best": "when the metric improves"}.get(strategy, strategy)


_SETS_FLAG = re.compile(r"\bshould_(log|evaluate|save)\s*=(?!=)\s*(?!False\b)")
_FLAG_KINDS = {"log": "logging", "evaluate": "eval", "save": "save"}  # control.should_<flag> -> its strategy's kind
_FLAG_OF = {kind: flag for flag, kind in _FLAG_KINDS.items()}
_STEP_EVENTS = ("on_step_begin", "on_step_end", "on_substep_end", "on_pre_optimizer_step", "on_optimizer_step")


def flag_setters(callbacks: Sequence[Any]) -> dict[tuple[str, str], list[str]]:
    """Which callbacks (other than DefaultFlowCallback, which follows the strategies) set control.should_log,
    should_evaluate or should_save, read from their handlers' source: {(kind, level): ['MyCallback.on_step_end']},
    kind 'logging', 'eval' or 'save', level 'steps' or 'epoch' (a flag set in on_epoch_* acts after the epoch, in a
    step's events after the step, elsewhere after either)."""
    found: dict[tuple[str, str], list[str]] = {}
    for cb in callbacks:
        cls = type(cb)
        if cls.__module__.startswith("transformers."):
            continue  # the library's own: DefaultFlowCallback follows the strategies, the others set no such flag
        for name, fn in vars(cls).items():
            if not name.startswith("on_") or not callable(fn):
                continue
            try:
                source = inspect.getsource(fn)
            except (OSError, TypeError):  # defined where no source is kept: not read
                continue
            levels = ("epoch",) if name.startswith("on_epoch") else ("steps",) if name in _STEP_EVENTS else ("steps", "epoch")
            for flag in dict.fromkeys(_SETS_FLAG.findall(source)):
                for level in levels:
                    found.setdefault((_FLAG_KINDS[flag], level), []).append(f"{cls.__name__}.{name}")
    return found


class _Builder:
    """Builds the phases of one Trainer's loops, with its callbacks' handlers and its configured strategies."""

    def __init__(self, args: Any, callbacks: Sequence[Any], eval_names: Sequence[str] = ()):
        self.args, self.callbacks = args, list(callbacks)
        self.eval_names = list(eval_names)  # the names of a dict of eval datasets: one evaluation per dataset
        self.setters = flag_setters(self.callbacks)  # the callbacks that set a flag themselves
        self.positions = {id(cb): i for i, cb in enumerate(self.callbacks)}  # a callback's order: its place in the list

    def ev(self, name: str, description: str = "", role: Role = "body", mode: Mode | None = None) -> Event:
        """An event with the callbacks that override its method, in call order."""
        return event(name, description or _DESCRIPTIONS.get(name, "Dispatched to every callback."), self.callbacks,
                     role=role, mode=mode, base=TrainerCallback, order=self.order)

    def order(self, cb: Any) -> float:
        """A callback's order: its place in the trainer's callback list (the Trainer calls them in that order)."""
        return self.positions[id(cb)]

    def runs(self, kind: str, level: str) -> bool:
        """True when the strategy of `kind` acts at `level` ('steps' or 'epoch')."""
        strategy = _value(getattr(self.args, f"{kind}_strategy"))
        if kind == "logging" and level == "steps" and self.args.logging_first_step:
            return True
        if (kind, level) in self.setters:  # a callback sets the flag itself, whatever the strategy
            return True
        if kind == "save" and strategy == "best":  # decided after each evaluation
            return _value(self.args.eval_strategy) == level
        return strategy == level

    def when(self, kind: str, level: str) -> str:
        """When the flag of `kind` is set after a step or an epoch (`level`): by its strategy (DefaultFlowCallback's
        rules, the last step included) and by the callbacks that set it themselves."""
        a = self.args
        strategy = _value(getattr(a, f"{kind}_strategy"))
        text = f"{kind}_strategy='{strategy}'"
        if strategy == level or (kind == "save" and strategy == "best"):
            text += f", {_every(a, kind)}"
            if level == "steps" and kind == "logging" and a.logging_first_step:
                text += " and after step 1 (logging_first_step)"
            elif level == "steps" and kind != "logging" and strategy == "steps":
                text += " and at the last step"  # DefaultFlowCallback's rule at max_steps
        elif kind == "logging" and level == "steps" and a.logging_first_step:
            text += ", after step 1 (logging_first_step)"
        names = self.setters.get((kind, level))
        return text + (f"; when {' or '.join(names)} sets control.should_{_FLAG_OF[kind]}" if names else "")

    def train(self) -> list[Phase]:
        """Trainer.train(): train begin, the epoch loop, final metrics, train end."""
        a = self.args
        steps: list[Step] = [
            work("setup", "trainer._inner_training_loop(...)", "Dataloader, optimizer, scheduler, a fresh TrainerState; "
                 "model.zero_grad()."),
            self.ev("on_train_begin", role="enter"),
        ]
        if a.eval_on_start:
            steps.append(self.evaluation("eval_on_start=True: one evaluation before the first step."))
        steps += [
            self.epochs(),
            work("log", "trainer._finalize_training(...)", "train_loss, train_runtime... logged by trainer.log."),
            self.ev("on_log", "The training metrics (train_loss, train_runtime, total_flos...).", mode="train"),
            work("finish", "trainer._finalize_training(...)", "The best checkpoint loaded if load_best_model_at_end; "
                 "older checkpoints deleted by save_total_limit."),
            self.ev("on_train_end", role="exit"),
        ]
        stop = cancel("control.should_training_stop", "on_log", description=(
            "a flag a callback sets, not an exception (DefaultFlowCallback at max_steps, EarlyStoppingCallback): the "
            "step loop ends after the current micro-batch and its log/evaluate/save, then on_epoch_end and the "
            "epoch's log/evaluate/save run, and the epoch loop ends"))
        create = Phase("create", "Create", [self.ev("on_init_end", "Fires once, at the end of Trainer.__init__: "
                                                   "callbacks added later (add_callback) never receive it.")],
                       note="Trainer.__init__ fires on_init_end, once (before any train() a trace can see).")
        return [create, phase("train", "Train", steps, cancel=stop,
                              note="trainer.train() → _inner_training_loop; in the callback_handler's order, every "
                                   "callback is called at every event; only those overriding on_<event> are listed.")]

    def epochs(self) -> Phase:
        """The epoch loop: epoch begin, the step loop, epoch end and the epoch's log/evaluate/save."""
        a = self.args
        count = f"max_steps={a.max_steps}" if a.max_steps > 0 else f"num_train_epochs={a.num_train_epochs:g}"
        steps: list[Step] = [self.ev("on_epoch_begin", role="enter", mode="train"), self.step_loop(),
                             self.ev("on_epoch_end", role="exit", mode="train")]
        after = self.log_evaluate_save("epoch")
        if after is not None:
            steps.append(after)
        stop = cancel("control.should_epoch_stop", "on_epoch_end", description=(
            "a flag a callback sets (or should_training_stop): the step loop ends after the current micro-batch "
            "and its log/evaluate/save"))
        return phase("epoch", "Epoch Loop", steps, repeat=f"for each epoch ({count})", cancel=stop, mode="train")

    def step_loop(self) -> Phase:
        """One optimizer step: data, micro-batches with gradient accumulation, the optimizer step, log/evaluate/save."""
        a = self.args
        gas = a.gradient_accumulation_steps
        forward = work("forward+backward", "trainer.training_step(model, inputs, num_items_in_batch)",
                       "model.train(); loss = compute_loss(model, inputs); accelerator.backward(loss).")
        steps: list[Step] = [
            work("data", "trainer.get_batch_samples(epoch_iterator, gradient_accumulation_steps, device)",
                 f"The step's {gas} micro-batch(es), fetched at once."),
            self.ev("on_step_begin", role="enter", mode="train"),
        ]
        if gas > 1:
            steps.append(phase("substep", "Micro-batches", [forward, self.ev("on_substep_end", mode="train")],
                               repeat=f"for each micro-batch but the last (gradient_accumulation_steps={gas})",
                               mode="train"))
        steps += [
            forward,
            work("clip gradients", "trainer._clip_grad_norm(model)", f"max_grad_norm={a.max_grad_norm:g}.",
                 condition="args.max_grad_norm > 0") if a.max_grad_norm > 0 else None,
            self.ev("on_pre_optimizer_step", mode="train"),
            work("optimizer step", "trainer.optimizer.step()"),
            self.ev("on_optimizer_step", mode="train"),
            work("scheduler+zero_grad", "trainer.lr_scheduler.step(); model.zero_grad(); state.global_step += 1"),
            self.ev("on_step_end", mode="train"),
            self.log_evaluate_save("steps"),
        ]
        repeat = f"for each optimizer step of the epoch ({gas} micro-batch{'es' if gas > 1 else ''} each)"
        return phase("step", "Step Loop", [s for s in steps if s is not None], repeat=repeat, mode="train")

    def log_evaluate_save(self, level: str) -> Phase | None:
        """trainer._maybe_log_save_evaluate after a step or an epoch: the parts the strategies set flags for."""
        a = self.args
        steps: list[Step] = []
        if self.runs("logging", level):
            steps += [work("log", "trainer.log({'loss': ..., 'grad_norm': ..., 'learning_rate': ...})",
                           "The mean training loss since the last log.", condition="control.should_log"),
                      self.ev("on_log", f"The training loss, grad norm and learning rate: {self.when('logging', level)}.",
                              mode="train")]
        if self.runs("eval", level):
            steps.append(self.evaluation(f"Runs when control.should_evaluate: {self.when('eval', level)}.",
                                         condition=_every(a, "eval")))
        if self.runs("save", level):
            steps += [work("save checkpoint", "trainer._save_checkpoint(model, trial)", condition="control.should_save"),
                      self.ev("on_save", f"{_DESCRIPTIONS['on_save']} {self.when('save', level)}.", mode="train")]
        if not steps:
            return None
        where = "step" if level == "steps" else "epoch"
        return phase("log_save", f"Log, evaluate, save after the {where}", steps, note=(
            "trainer._maybe_log_save_evaluate: each part runs only when its control flag is set (by DefaultFlowCallback "
            "from the strategies, or by any callback); a callback can set a flag at other steps too."))

    def evaluation(self, note: str | None = None, condition: str | None = None) -> Phase:
        """Trainer.evaluate(): the prediction loop over the eval dataloader, its metrics logged, on_evaluate."""
        steps: list[Step] = [
            work("evaluate", "trainer.get_eval_dataloader(eval_dataset)", "The eval dataloader, then the first batch."),
            self.prediction_loop(),
            work("metrics", "trainer.compute_metrics(EvalPrediction(...))", "Losses, logits and labels gathered; "
                 "compute_metrics, when given, computes the metrics."),
            self.ev("on_log", "The eval metrics (eval_loss, eval_runtime...), logged by trainer.log.", mode="valid"),
            self.ev("on_evaluate", role="exit", mode="valid"),
        ]
        label = f"Evaluate ({condition})" if condition else "Evaluate"
        repeat = (f"for each evaluation dataset ({', '.join(self.eval_names)}): eval_dataset is a dict, each "
                  "evaluated and logged on its own (metrics prefixed eval_<name>_)") if self.eval_names else None
        return phase("evaluate", label, steps, mode="valid", note=note, repeat=repeat)

    def prediction(self) -> Phase:
        """Trainer.predict(): the prediction loop over the test dataloader, then on_predict."""
        steps: list[Step] = [
            work("predict", "trainer.get_test_dataloader(test_dataset)", "The test dataloader, then the first batch."),
            self.prediction_loop(),
            work("metrics", "trainer.compute_metrics(EvalPrediction(...))", "Predictions, labels and metrics gathered."),
            self.ev("on_predict", role="exit", mode="valid"),
        ]
        return phase("predict", "Predict", steps, mode="valid")

    def prediction_loop(self) -> Phase:
        """trainer.evaluation_loop's batches: prediction_step, then on_prediction_step."""
        steps: list[Step] = [
            work("prediction step", "trainer.prediction_step(model, inputs, prediction_loss_only)",
                 "Forward pass in eval mode without gradients; loss, logits and labels gathered."),
            self.ev("on_prediction_step", mode="valid"),
        ]
        return phase("prediction", "Prediction Loop", steps, repeat="for each batch of the dataloader", mode="valid")

    def notes(self, loop: str) -> list[str]:
        """The configuration the loop runs with, as the spec's notes."""
        a = self.args
        if loop != "train":
            return [f"per_device_eval_batch_size={a.per_device_eval_batch_size}"]
        return [
            f"logging_strategy='{_value(a.logging_strategy)}': {_every(a, 'logging')}; "
            f"eval_strategy='{_value(a.eval_strategy)}': {_every(a, 'eval')}; "
            f"save_strategy='{_value(a.save_strategy)}': {_every(a, 'save')}.",
            f"gradient_accumulation_steps={a.gradient_accumulation_steps}, num_train_epochs={a.num_train_epochs:g}, "
            f"max_steps={a.max_steps}, per_device_train_batch_size={a.per_device_train_batch_size}.",
        ]


def trainer_spec(trainer: Any, loop: str = "train", cbs: Sequence[Any] = ()) -> LoopSpec:
    """The loop `trainer` runs in `train()`, `evaluate()` or `predict()`, with `cbs` previewed as add_callback
    would append them (nothing is attached)."""
    if loop not in LOOPS:
        raise LoopvizError(f"loop={loop!r}: a Hugging Face Trainer has these loops: {', '.join(LOOPS)}.")
    callbacks = [*trainer.callback_handler.callbacks, *(cb() if isinstance(cb, type) else cb for cb in cbs)]
    evaluated = getattr(trainer, "eval_dataset", None)
    builder = _Builder(trainer.args, callbacks, [str(name) for name in evaluated] if isinstance(evaluated, dict) else ())
    phases = {"train": builder.train, "evaluate": lambda: [builder.evaluation()], "predict": lambda: [builder.prediction()]}
    return generic_loop_spec(loop, FRAMEWORK, callbacks, phases[loop](), order=builder.order,
                             base=TrainerCallback, notes=builder.notes(loop))


# what t.diagnose() says of a Trainer's trace, in its words (loopviz.trace.diagnose.ADVICE_KEYS)
ADVICE = {
    "data_work": "data",
    "compute_work": ["forward+backward", "optimizer step", "scheduler+zero_grad"],
    "step_work": "optimizer step",
    "forward_backward_work": ["forward+backward"],
    "per_batch_events": ["on_step_begin", "on_step_end", "on_substep_end", "on_pre_optimizer_step",
                         "on_optimizer_step", "on_log"],
    "own_modules": ["transformers."],
    "fixes": {
        "loader": "TrainingArguments(..., dataloader_num_workers={workers}, dataloader_pin_memory=True)",
        "loader_persistent": "TrainingArguments(..., dataloader_num_workers={workers}, "
                             "dataloader_persistent_workers=True, dataloader_pin_memory=True)",
        "stall": "TrainingArguments(..., dataloader_num_workers={workers}, dataloader_persistent_workers=True)",
        "every_n": "if state.global_step % 10: return  # first line of {callback}.{event}: its work every 10th step",
        "rarer": "if state.global_step % 100: return  # {callback}.{event} already skips most steps: its heavy calls "
                 "less often still (or move them to on_epoch_end), or make them cheaper",
        "remove": "make {callback}.{event} cheaper, or trainer.remove_callback({callback})",
        "precision": "TrainingArguments(..., bf16=True)  # mixed precision (fp16=True on GPUs without bfloat16)",
        "validation": "TrainingArguments(..., eval_strategy='steps', eval_steps=1000, per_device_eval_batch_size=64)",
        "batch_size": "TrainingArguments(..., per_device_train_batch_size=64)",
        "loader_batch": "TrainingArguments(..., per_device_train_batch_size=64)  # larger batches: part of the "
                        "loader's cost is paid per batch",
        "step": "TrainingArguments(..., optim='adamw_torch_fused')",
    },
    "own_fixes": {
        "ProgressCallback": "TrainingArguments(..., disable_tqdm=True)",
        "PrinterCallback": "TrainingArguments(..., logging_steps=500)",
    },
}


def _model_facts(trainer: Any) -> dict[str, str]:
    """The model's device and precision as the trace starts (`meta['device']`, `meta['precision']`: 'bf16-mixed' or
    'fp16-mixed' from the TrainingArguments, else the weights' own: '32', '16-true'...)."""
    try:
        device = str(next(trainer.model.parameters()).device)
    except (StopIteration, AttributeError, TypeError):
        return {}
    args = trainer.args
    mixed = "bf16-mixed" if getattr(args, "bf16", False) else "fp16-mixed" if getattr(args, "fp16", False) else None
    return {"device": device, "precision": mixed or weights_precision(trainer.model), **_loader_facts(args),
            **cpu_facts()}


def _loader_settings(args: Any, which: str) -> dict[str, object]:
    """The settings of the loader the Trainer makes for `which` ('train' or 'eval'), from its TrainingArguments."""
    return {"bs": args.per_device_train_batch_size if which == "train" else args.per_device_eval_batch_size,
            "num_workers": args.dataloader_num_workers,
            "persistent_workers": bool(args.dataloader_persistent_workers),
            "pin_memory": bool(args.dataloader_pin_memory), "drop_last": bool(args.dataloader_drop_last)}


def _loader_facts(args: Any) -> dict[str, Any]:
    """The training loader's settings from the TrainingArguments (`meta['loaders']`, as fastai's adapter notes)."""
    facts = torch_loader_facts(_loader_settings(args, "train"))
    return {"loaders": {"train": facts}} if facts else {}


class _TrainerTracer(DispatchTracer):
    """A DispatchTracer on `callback_handler.call_event` whose loops are the trainer's `train`, `evaluate` and
    `predict` calls (wrapped on the trainer instance; one inside another belongs to it)."""

    def __init__(self, trainer: Any, data: bool = False, live: bool = False, **kwargs: Any):
        self._trainer = weakref.ref(trainer)  # weakly: a trace never exited ends when the trainer is collected
        self.data = data  # also time the loaders' loops (`loopviz.adapters.torch_timer`)
        self.live = check_bool("live", live)  # also show the live view while it runs (`transformers_live`)
        handler = weakref.ref(trainer.callback_handler)
        self.training = self.evaluating = 0  # train / evaluate-or-predict calls open now
        self.epoch = -1  # the epoch `train` is in, read from state.epoch at on_epoch_begin, where it is exact
        # callbacks and where are read at every dispatch: closures, the trainer's handler list read directly
        super().__init__(trainer.callback_handler, "call_event", callbacks=lambda: getattr(handler(), "callbacks", []),
                         framework=FRAMEWORK, loop_start=(), where=self._where_of(),
                         work_names=WORK_NAMES, base=TrainerCallback,
                         batch_events=("on_step_begin", "on_step_end"), cancels=(), advice=ADVICE,
                         measure_cost=cost_measure(getattr(kwargs.get("clock"), "name", "host"),
                                                   kwargs.get("now") is not None),
                         **kwargs)  # stops by flags

    @property
    def trainer(self) -> Any:
        """The traced trainer (None once it has been collected)."""
        return self._trainer()

    def __enter__(self) -> Any:
        trace = super().__enter__()
        trace.meta.update(_model_facts(self.trainer))
        for name in LOOPS:  # put back with the dispatch method and the handlers when the trace ends
            self.patches.put(self.trainer, name, self._entry(name, getattr(self.trainer, name)))
        self.patches.put(self.obj, "on_epoch_begin", self._epoch_begin(self.obj.on_epoch_begin))
        if self.data:
            self._time_loaders(trace)
        if self.live:
            self._add_live()
        return trace

    def _add_live(self) -> None:
        """live=True: the live view's callback joins the trainer's callbacks for the trace (traced as any callback);
        it leaves them as the trace ends, before the patches are taken off."""
        from loopviz.adapters.transformers_live import LoopvizLive
        from loopviz.trace.live import LiveStats

        trainer = self.trainer
        live = LoopvizLive(LiveStats(self.rec, self.recording.finish), trainer.callback_handler)
        trainer.add_callback(live)

        def remove(data: Any) -> None:
            try:
                held = self.trainer
                if held is not None and live in held.callback_handler.callbacks:
                    held.remove_callback(live)
            finally:
                live.close()

        self.recording.closing.insert(0, remove)

    def _time_loaders(self, trace: Any) -> None:
        """Time the loop of each loader the trainer makes from now on (`get_train_dataloader`...): their timing ends
        with the trace, before the trainer's patches are taken off."""
        from loopviz.adapters.torch_timer import TorchTiming, timing_what_it_makes

        timing = TorchTiming()
        self.recording.closing.append(timing.finish)
        trace.meta["data"] = True
        for method, name in (("get_train_dataloader", "train"), ("get_eval_dataloader", "eval"),
                             ("get_test_dataloader", "test")):
            if hasattr(self.trainer, method):
                self.patches.put(self.trainer, method, timing_what_it_makes(
                    getattr(self.trainer, method), timing, name, lambda: self.active, lambda loader: [loader]))

    def _entry(self, label: str, original: Callable[..., Any]) -> Callable[..., Any]:
        """`trainer.<label>` recorded as a loop of its own when no other loop is open."""
        training = int(label == "train")

        @functools.wraps(original)
        def entry(*args: Any, **kwargs: Any) -> Any:
            if not self.active:
                return original(*args, **kwargs)
            outermost = self.rec.loop < 0
            if outermost:
                self.forget_plans()  # the handlers are looked for again: callbacks may have gained or lost some
                self.rec.begin_loop(label)
            if training and not self.training:
                self.epoch = 0
            self.training += training
            self.evaluating += 1 - training
            try:
                return original(*args, **kwargs)
            finally:
                self.training -= training
                self.evaluating -= 1 - training
                if outermost:
                    self.rec.end_loop(self.rec.now())

        return entry

    def _epoch_begin(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """`callback_handler.on_epoch_begin`, noting the epoch first (state.epoch is its number there; later in the
        epoch its last step already counts as the next epoch)."""

        @functools.wraps(original)
        def on_epoch_begin(args: Any, state: Any, *rest: Any, **kwargs: Any) -> Any:
            self.epoch = int(state.epoch or 0)
            return original(args, state, *rest, **kwargs)

        return on_epoch_begin

    def _where_of(self) -> Callable[[Any, str], tuple[int, int, int]]:
        """where(handler, event) -> (mode, epoch, global step): mode 0 for train begin/end, 1 training, 2 evaluating or
        predicting; the epoch noted at on_epoch_begin while training."""
        trainer, tracer, begin_end = self._trainer, self, frozenset(_BEGIN_END)

        def where(handler: Any, name: str) -> tuple[int, int, int]:
            state = trainer().state
            mode = 2 if tracer.evaluating else 0 if name in begin_end else 1
            if tracer.training:
                return mode, tracer.epoch, state.global_step
            return mode, (int(state.epoch) if state.epoch is not None else -1), state.global_step

        return where


def trace_trainer(trainer: Any, **kwargs: Any) -> DispatchTracer:
    """A context manager tracing the trainer's events, its callbacks' handlers and the work between them; gives a
    `Trace`. Each `train()`, `evaluate()` and `predict()` called inside is a loop; the trainer is left as it was."""
    return _TrainerTracer(trainer, **kwargs)


# -- the adapter's entry points (see loopviz.adapters) -------------------------------------------


def loop_spec(trainer: Any, loop: str = "train", cbs: Sequence[Any] = ()) -> LoopSpec:
    """The loop `trainer` runs (`train`, `evaluate` or `predict`), with `cbs` previewed."""
    return trainer_spec(trainer, loop, cbs)


def trace(trainer: Any, clock: str = "auto", changes: bool = False, waits: bool = False, data: bool = False,
          **options: Any) -> Trace:
    """The `Trace` of the trainer inside `with` it (or between its start() and stop()) (`clock` as for fastai; no
    state changes or waits; `data`: also time its loaders' loops, the dataset's items and the data collator, in the
    worker processes too)."""
    from loopviz.trace.clock import make_clock

    if changes:
        raise LoopvizError("state changes are recorded for fastai learners only; trace a Trainer without changes.")
    if waits:
        raise LoopvizError("waits for the GPU are recorded for fastai learners only; trace a Trainer without waits.")
    if data and options.get("now") is not None:
        raise LoopvizError("data=True times the loader's worker processes on the system's clock "
                           "(time.perf_counter_ns): it cannot run on an injected clock (now=).")
    return trace_trainer(trainer, clock=make_clock(clock, str(getattr(trainer.model, "device", "cpu"))), data=data,
                         **options).trace


def data_loop(trainer: Any, which: str = "train") -> DataLoop:
    """The loop the Trainer's `which` loader ('train' or 'eval') runs for each step: its dataset's `__getitem__` and
    its data collator, where the TrainingArguments say (read from the trainer: no loader is made)."""
    from loopviz.checks import check_choice

    check_choice("which", which, ["train", "eval"])
    dataset = trainer.train_dataset if which == "train" else trainer.eval_dataset
    notes = ["the Trainer moves each batch to the device in its training step (_prepare_inputs)",
             "its loader (accelerate's) makes the next batch before it yields one: one batch ahead"]
    if isinstance(dataset, dict) and dataset:
        notes.append(f"one loader per evaluation dataset ({', '.join(map(str, dataset))}): the first shown")
        dataset = next(iter(dataset.values()))
    if dataset is None:
        raise LoopvizError(f"this Trainer has no {which}_dataset: give it one (Trainer({which}_dataset=...)) to see "
                           f"its loader's loop.")
    args = trainer.args
    if getattr(args, "remove_unused_columns", False) and hasattr(dataset, "column_names"):
        notes.append("the columns the model's forward does not take are removed first (remove_unused_columns)")
    return torch_data_loop(None, which, FRAMEWORK, tuple(notes), dataset, trainer.data_collator,
                           _loader_settings(args, which))


def fit(trainer: Any, epochs: int, cbs: Sequence[Any] = ()) -> None:
    """`trainer.train()` for `epochs` epochs with `cbs` added; the trainer's epochs and callbacks are put back."""
    before = trainer.args.num_train_epochs
    trainer.args.num_train_epochs = epochs
    for cb in cbs:
        trainer.add_callback(cb)
    try:
        trainer.train()
    finally:
        trainer.args.num_train_epochs = before
        for cb in cbs:
            trainer.remove_callback(cb)


def callback(name: str) -> Any:
    """A callback instance from `module:Class`, or the name of one of transformers' own (e.g. PrinterCallback)."""
    module_name, _, cls_name = name.rpartition(":")
    module = importlib.import_module(module_name) if module_name else transformers
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, TrainerCallback)):
        where = module_name or "transformers"
        raise LoopvizError(f"--cbs {name}: {where} has no TrainerCallback class {cls_name}; give module:Class.")
    return cls()
