"""Build a `LoopSpec` from a fastai `Learner`, from fastai's runtime event list and callbacks.

Events come from `fastai.callback.core._events`; the phases follow `Learner._with_events`, which
turns every phase X into before_X, the body, after_cancel_X (on CancelXException) and after_X.
Only the nesting of phases (fit > epoch > train/validate > batch > backward/step) is written here,
because it lives in fastai's code, not in its data. Any fastai event this structure does not
place is reported, never dropped.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import fastai
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback, GatherPredsCallback, TrainEvalCallback
from fastai.torch_core import rank_distrib
from fastcore.foundation import L

from loopviz.adapters.fastai.creation import built_with
from loopviz.adapters.fastai.descriptions import CANCEL_DESCRIPTIONS, WORK, describe_event
from loopviz.adapters.fastai.handlers import callback_info, find_handler, handler_names
from loopviz.adapters.fastai.runtime import nested_loop_notes, switch_off_reason
from loopviz.checks import check_choice, got
from loopviz.errors import LoopvizError
from loopviz.model import CancelPath, Event, Handler, LoopSpec, Mode, Phase, Role, Step

__all__ = ["LOOPS", "build_spec", "preview_callbacks", "as_callbacks"]


def _fastai_events() -> list[str]:
    """fastai's own list of events, in the order it declares them."""
    return list(fastai_core._events)


def _fastai_inner_loop() -> list[str]:
    """The batch-level events that fastai filters with run_train/run_valid."""
    return list(fastai_core._inner_loop)


# Events before a callback's before_fit has had its chance to set run=False.
_BEFORE_SWITCH_OFF = ("after_create", "before_fit")


def _exception_name(phase: str) -> str:
    """fastai's cancel exception for a phase: CancelFitException, CancelValidException..."""
    stem = "Valid" if phase == "validate" else phase.capitalize()
    return f"Cancel{stem}Exception"


class _Builder:
    """Places fastai's events into phases and attaches each callback's handlers to them."""

    def __init__(self, learn: Any, cbs: Sequence[Callback], added: Sequence[Callback] = ()):
        self.learn = learn
        self.cbs = list(cbs)
        self.added = [id(cb) for cb in added]
        self.built_with = built_with(learn)
        self.infos = [callback_info(cb) for cb in self.cbs]
        self.events = _fastai_events()
        self.inner_loop = _fastai_inner_loop()
        self.placed: set[str] = set()
        self.omitted: set[str] = set()  # events this loop cannot fire (backward/step when learn.training stays False)
        self.switched_off = _switched_off(learn, self.cbs)
        self.fixed_training = None if _sets_training(self.cbs) else bool(getattr(learn, "training", False))

    def created_later(self, cb: Callback) -> bool:
        """True when `cb` is not one the learner was built with, so after_create never reached it."""
        if id(cb) in self.added:
            return True
        return self.built_with is not None and cb not in self.built_with

    def trains(self, mode: Mode | None) -> bool | None:
        """The value of learn.training during `mode`'s batches: set by TrainEvalCallback, else never changed."""
        if mode is None:
            return None
        return mode == "train" if self.fixed_training is None else self.fixed_training

    def runs_as(self, mode: Mode | None) -> Mode | None:
        """The phase fastai runs `mode`'s batches in, as `learn.training` says (None outside the batch loops)."""
        training = self.trains(mode)
        return None if training is None else ("train" if training else "valid")

    def handlers(self, name: str, mode: Mode | None, placed: bool = False) -> list[Handler]:
        """Every callback's handler for `name`, in fastai's call order; `placed` when the loop fires it itself."""
        filter_mode = self.runs_as(mode)
        found = []
        for cb, info in zip(self.cbs, self.infos):
            handler = find_handler(cb, info, name, filter_mode, self.inner_loop, self.learn)
            if handler is None:
                continue
            if handler.skipped in ("run_train=False", "run_valid=False") and filter_mode != mode:
                why = f"learn.training is {filter_mode == 'train'}: no TrainEvalCallback"
                handler = replace(handler, skipped=f"{handler.skipped} ({why})")
            if name == "after_create" and self.created_later(cb):
                handler = replace(handler, skipped="added after Learner.__init__")
            elif placed and self.is_switched_off(cb, handler, name):
                handler = replace(handler, skipped=self.switched_off[id(cb)])
            found.append(handler)
        return found

    def is_switched_off(self, cb: Callback, handler: Handler, name: str) -> bool:
        """True when `cb` turned itself off (run=False) in this loop's before_fit, before `name` fires."""
        # a replaced __call__ receives every event whatever `run` says (find_handler treats it the same way)
        return id(cb) in self.switched_off and handler.runs and handler.via != "call" and name not in _BEFORE_SWITCH_OFF

    def event(self, name: str, mode: Mode | None, role: Role = "body", cancel: CancelPath | None = None) -> Event | None:
        """An event with its handlers, or None when this fastai has no such event."""
        if name not in self.events:
            return None
        self.placed.add(name)
        return Event(name, describe_event(name), self.handlers(name, mode, placed=True), role=role, cancel=cancel,
                     mode=mode)

    def cancel_path(self, phase: str) -> CancelPath | None:
        """How a phase is cancelled, when fastai has both the exception and the after_cancel event."""
        exception = _exception_name(phase)
        handler_event = f"after_cancel_{phase}"
        if not hasattr(fastai_core, exception) or handler_event not in self.events:
            return None
        return CancelPath(exception, handler_event, f"after_{phase}", CANCEL_DESCRIPTIONS.get(phase, ""))

    def phase(
        self, name: str, label: str, body: Iterable[Step | None], *, mode: Mode | None = None,
        repeat: str | None = None, cancellable: bool = True, note: str | None = None,
        final: Iterable[Step] = (), minor: bool = False,
    ) -> Phase:
        """A phase shaped like `Learner._with_events`: before_X, body, after_cancel_X, after_X, final."""
        cancel = self.cancel_path(name) if cancellable else None
        steps: list[Step | None] = [self.event(f"before_{name}", mode, "enter"), *body]
        if cancel is not None:
            steps.append(self.event(cancel.handler_event, mode, "cancel", cancel))
        steps.append(self.event(f"after_{name}", mode, "exit"))
        steps.extend(final)
        kept = [s for s in steps if s is not None]
        return Phase(name, label, kept, repeat=repeat, cancel=cancel, mode=mode, note=note, minor=minor)

    def batch(self, mode: Mode, source: str) -> Phase:
        """One batch: draw, then the batch events; backward and step only when training."""
        body: list[Step | None] = [
            WORK["forward"], self.event("after_pred", mode), WORK["loss"], self.event("after_loss", mode),
        ]
        run_mode = self.runs_as(mode)
        if run_mode == "train":
            only_training = "Only when training and the batch has targets."
            body += [
                self.phase("backward", "Backward", [WORK["backward"]], mode=mode, note=only_training, minor=True),
                self.phase("step", "Step", [WORK["step"]], mode=mode, note=only_training, minor=True),
                WORK["zero_grad"],
            ]
        elif mode == "train":
            self.omitted.update(f"{kind}_{phase}" for phase in ("backward", "step")
                                for kind in ("before", "after_cancel", "after"))
        phase = self.phase("batch", "Batch Loop", body, mode=mode, repeat=f"for each batch of {source}")
        phase.steps.insert(0, WORK["draw"])
        if run_mode != mode:  # the phase fastai itself runs these batches in (learn.training), as a trace records it
            phase.mode = run_mode
            for event in phase.events():
                event.mode = run_mode
        return phase

    def train(self) -> Phase:
        """The training part of an epoch."""
        return self.phase("train", "Train", [self.batch("train", "dls.train")], mode="train")

    def validate(self, source: str = "dls.valid") -> Phase:
        """The validation part of an epoch (or of validate/get_preds)."""
        return self.phase("validate", "Valid", [self.batch("valid", source)], mode="valid")

    def create(self) -> Phase:
        """Learner.__init__, where after_create fires once."""
        note = "Learner.__init__ fires after_create, once."
        if self.built_with is None:
            note += (" loopviz cannot tell which callbacks this learner was built with (it was created before "
                     "loopviz patched fastai's Learner, or loaded with load_learner), so every callback it has now "
                     "is listed here, including any added later with add_cb, which never received after_create.")
        return Phase("create", "Create", [s for s in [self.event("after_create", None)] if s is not None], note=note)

    def fit(self, note: str | None = None) -> Phase:
        """The whole of `Learner.fit`."""
        epoch = self.phase("epoch", "Epoch Loop", [self.train(), self.validate()], repeat="for each epoch in range(n_epoch)")
        return self.phase("fit", "Fit", [epoch], final=[WORK["cleanup"]], note=note)

    def with_learn(self, source: str, note: str) -> Phase:
        """validate()/get_preds(): `with learn:` fires before_fit+before_epoch, then validation, then after_epoch+after_fit."""
        epoch = self.phase("epoch", "Epoch", [self.validate(source)], cancellable=False)
        return self.phase("fit", "Fit", [epoch], cancellable=False, note=note)

    def custom_events(self) -> list[Event]:
        """Events that callbacks handle, or that are registered on fastai's `event`, but the loop never fires."""
        registered = {n for n in vars(fastai_core.event) if not n.startswith("_")}
        names = set().union(*(handler_names(cb) for cb in self.cbs)) | registered
        custom = sorted(names - set(self.events))
        events = []
        for name in custom:
            description = f"Custom event: fastai's loop never fires it; it runs only where code calls learn('{name}')."
            if name not in registered:
                description += f" fastai raises `missing {name}` unless the name is first added to fastai.callback.core.event."
            events.append(Event(name, description, self.handlers(name, None)))
        return events


_WITH_LEARN_NOTE = (
    "{entry} enters `with learn:`: before_fit and before_epoch fire together on entry, after_epoch "
    "and after_fit on exit, even when an exception escapes; there is no training part and no "
    "cancel handling at fit or epoch level."
)


def _fit_spec(b: _Builder) -> list[Phase]:
    return [b.create(), b.fit()]


def _validate_spec(b: _Builder) -> list[Phase]:
    return [b.with_learn("dls.valid (or the dl passed in)", _WITH_LEARN_NOTE.format(entry="learn.validate()"))]


def _get_preds_spec(b: _Builder) -> list[Phase]:
    note = _WITH_LEARN_NOTE.format(entry="learn.get_preds()") + " With inner=True only before_validate...after_validate fire."
    return [b.with_learn("dls.valid, unshuffled (or the dl passed in)", note)]


def _lr_find_spec(b: _Builder) -> list[Phase]:
    note = (
        "learn.lr_find() runs fit(num_it // len(dls.train) + 1) with LRFinder and logging off. LRFinder raises "
        "CancelValidException in before_validate every epoch and CancelFitException in after_batch after "
        "num_it batches (or when the loss diverges); trackers such as SaveModelCallback switch themselves "
        "off (run=False) in before_fit when learn.lr_finder exists."
    )
    return [b.fit(note=note)]


def _fit_one_cycle_spec(b: _Builder) -> list[Phase]:
    note = "learn.fit_one_cycle() is fit() with a ParamScheduler that anneals lr and momentum (1cycle policy)."
    return [b.create(), b.fit(note=note)]


def _fine_tune_spec(b: _Builder) -> list[Phase]:
    frozen = b.fit(note="First fit_one_cycle(freeze_epochs), with only the last parameter group trained.")
    unfrozen = b.fit(note="Second fit_one_cycle(epochs), all parameter groups trained with discriminative lr.")
    frozen.label, unfrozen.label = "Fit (frozen)", "Fit (unfrozen)"
    tune = Phase(
        "fine_tune", "Fine Tune", [WORK["freeze"], frozen, WORK["unfreeze"], unfrozen],
        note="learn.fine_tune() runs two complete fits, each with its own ParamScheduler.",
    )
    return [b.create(), tune]


def _lr_finder() -> Callback:
    from fastai.callback.schedule import LRFinder

    return LRFinder()


def _one_cycle_scheduler() -> Callback:
    from fastai.callback.schedule import ParamScheduler, SchedCos

    return ParamScheduler({"lr": SchedCos(1e-3, 1e-5)})


@dataclass(frozen=True)
class _Loop:
    """A loop loopviz can show: the callbacks its entry point adds around the user's `cbs`, and its phases.

    fastai adds them in one list, then sorts the learner's callbacks by `order`, keeping ties in insertion order;
    so the side of the user's callbacks they are put on decides who runs first on equal order.
    """

    phases: Callable[[_Builder], list[Phase]]
    before_user: Callable[[], list[Callback]] = list  # fit_one_cycle: fit(cbs=ParamScheduler(scheds)+L(cbs))
    after_user: Callable[[], list[Callback]] = list  # get_preds: validation_context(cbs=L(cbs)+[GatherPredsCallback])
    runs_fit: bool = False  # goes through Learner.fit, so takes start_epoch


LOOPS: dict[str, _Loop] = {
    "fit": _Loop(_fit_spec, runs_fit=True),
    "fit_one_cycle": _Loop(_fit_one_cycle_spec, before_user=lambda: [_one_cycle_scheduler()], runs_fit=True),
    "fine_tune": _Loop(_fine_tune_spec, before_user=lambda: [_one_cycle_scheduler()], runs_fit=True),
    "validate": _Loop(_validate_spec),
    "get_preds": _Loop(_get_preds_spec, after_user=lambda: [GatherPredsCallback()]),
    # lr_find takes no cbs: previewed ones stand for callbacks on the learner, which precede LRFinder
    "lr_find": _Loop(_lr_find_spec, after_user=lambda: [_lr_finder()]),
}


def preview_callbacks(learn: Any, added: Sequence[Callback]) -> list[Callback]:
    """The learner's callbacks plus `added`, in fastai's call order (stable on ties), attaching nothing."""
    return list(L([*learn.cbs, *added]).sorted("order"))


def _added_callbacks(loop: _Loop, cbs: Any, start_epoch: int = 0) -> list[Callback]:
    """The callbacks a loop adds for its duration, in the order fastai adds them (see `_Loop`)."""
    added = [*loop.before_user(), *as_callbacks(cbs), *loop.after_user()]
    if start_epoch != 0:  # Learner.fit: cbs = L(cbs) + SkipToEpoch(start_epoch)
        from fastai.learner import SkipToEpoch

        added.append(SkipToEpoch(start_epoch))
    return added


def _sets_training(cbs: Iterable[Callback]) -> bool:
    """True when a TrainEvalCallback runs, the only fastai callback that sets learn.training (True in before_train)."""
    return any(isinstance(cb, TrainEvalCallback) and cb.run for cb in cbs)


def _switched_off(learn: Any, cbs: Sequence[Callback]) -> dict[int, str]:
    """Callbacks (by id) that set their own run=False in before_fit in a loop with `cbs`, with the reason."""
    names = {cb.name for cb in cbs}
    rank = rank_distrib()
    reasons = {id(cb): switch_off_reason(cb, lambda attr: attr in names or hasattr(learn, attr), rank) for cb in cbs}
    return {key: reason for key, reason in reasons.items() if reason is not None}


def _listify(cbs: Any) -> list[Any]:
    """`cbs` as a list: None -> [], one callback -> [it] (checked by `as_callbacks`)."""
    if cbs is None:
        return []
    if isinstance(cbs, (list, tuple, L)):
        return list(cbs)
    return [cbs]


def as_callbacks(cbs: Any, argument: str = "cbs") -> list[Callback]:
    """Callback instances from `cbs` (None, one callback, or a list of instances or classes); a clear error naming
    `argument` for anything else."""
    return [_as_callback(cb, argument) for cb in _listify(cbs)]


def _as_callback(cb: Any, argument: str) -> Callback:
    """A callback instance from an instance or a class; a clear error for anything else."""
    if isinstance(cb, type) and issubclass(cb, Callback):
        try:
            return cb()
        except Exception as e:
            raise LoopvizError(
                f"{argument}: cannot create {cb.__name__}() without arguments ({type(e).__name__}: {e}). "
                f"Pass an instance instead, e.g. {argument}=[{cb.__name__}(...)]."
            ) from e
    if not isinstance(cb, Callback):
        raise LoopvizError(
            f"{argument} must hold fastai Callback instances or classes; got {got(cb)}."
        )
    return cb


def _check_start_epoch(loop: str, start_epoch: Any) -> None:
    """A clear error unless `start_epoch` is an int >= 0, and 0 for loops that do not go through `Learner.fit`."""
    if not isinstance(start_epoch, numbers.Integral) or isinstance(start_epoch, bool) or start_epoch < 0:
        raise LoopvizError(
            f"start_epoch must be an int >= 0, as in learn.fit(n_epoch, start_epoch=...); got {start_epoch!r}.")
    if start_epoch and not LOOPS[loop].runs_fit:
        fits = ", ".join(name for name, spec in LOOPS.items() if spec.runs_fit)
        raise LoopvizError(
            f"start_epoch is an option of fastai's fit loops ({fits}); loop={loop!r} has no such option.")


def _start_epoch_note(start_epoch: int) -> str:
    """What fit(start_epoch=n) adds to the loop."""
    skipped = "epoch 0" if start_epoch == 1 else f"epochs 0 to {start_epoch - 1}"
    return (f"fit(start_epoch={start_epoch}) adds SkipToEpoch (order 70): it raises CancelEpochException in "
            f"before_epoch for {skipped}, so those epochs go straight to after_cancel_epoch and after_epoch, with no "
            "training or validation, and the before_epoch handlers ordered after it do not run there.")


def _training_note(learn: Any, builder: _Builder, has_train: bool) -> str | None:
    """Why the batches are filtered and shaped as they are when no TrainEvalCallback sets learn.training."""
    training = builder.fixed_training
    if training is None:
        return None
    model_mode = "train" if getattr(getattr(learn, "model", None), "training", True) else "eval"
    note = (f"No TrainEvalCallback runs in this loop (Learner(default_cbs=False) has none), so learn.training is "
            f"never set and stays {training}, and nothing calls model.train() or model.eval(): the model stays in "
            f"{model_mode} mode throughout.")
    if has_train and not training:
        note += (" The training batches therefore run as validation batches do: no backward, no optimizer step, "
                 "no zero_grad, and run_train/run_valid filter their callbacks as in validation; a trace records "
                 "them in the valid phase, so times measured on them are shown with the validation batches'.")
    if training:
        note += " The validation batches therefore attempt backward and step as training batches do."
    return note


def build_spec(learn: Any, loop: str = "fit", cbs: Any = None, start_epoch: int = 0) -> LoopSpec:
    """The loop `learn` would run for `loop` (a key of `LOOPS`, e.g. 'fit' or 'get_preds'), with `cbs` previewed
    and, for the fit loops, `start_epoch` as in `learn.fit(n_epoch, start_epoch=...)`."""
    check_choice("loop", loop, LOOPS)
    _check_start_epoch(loop, start_epoch)
    added = _added_callbacks(LOOPS[loop], cbs, start_epoch)
    builder = _Builder(learn, preview_callbacks(learn, added), added)
    phases = LOOPS[loop].phases(builder)
    notes = [_start_epoch_note(start_epoch)] if start_epoch else []
    has_train = any(p.name == "train" for top in phases for p in top.phases())
    training_note = _training_note(learn, builder, has_train)
    notes += [training_note] if training_note else []
    notes += nested_loop_notes(builder.cbs)
    custom = builder.custom_events()
    if loop in ("fit", "fit_one_cycle"):
        unplaced = [e for e in builder.events if e not in builder.placed | builder.omitted]
        for name in unplaced:
            notes.append(f"fastai event {name} has no place in loopviz's loop structure; it is listed with custom events.")
            custom.append(Event(name, describe_event(name), builder.handlers(name, None)))
    spec = LoopSpec(
        loop=loop, framework=f"fastai {fastai.__version__}", phases=phases,
        callbacks=builder.infos, custom_events=custom, notes=notes,
    )
    return _with_data_loops(spec, learn)


def _with_data_loops(spec: LoopSpec, learn: Any) -> LoopSpec:
    """The spec with each `draw` holding the loop of the loader it draws from (training's or validation's)."""
    from loopviz.adapters.fastai.dataloop import data_loop

    loops = {}
    for mode, name in (("train", "train"), ("valid", "valid")):
        try:
            loops[mode] = data_loop(getattr(learn.dls, name), name)
        except Exception:  # no loaders, or loaders of another kind: draw stays as it was
            continue
    if not loops:
        return spec
    return spec.map(work=lambda w, phase: replace(w, data_loop=loops[phase.mode])
                    if w.name == "draw" and phase.mode in loops else w)
