"""Build a `LoopSpec` from a fastai `Learner`, from fastai's runtime event list and callbacks.

Events come from `fastai.callback.core._events`; the phases follow `Learner._with_events`, which
turns every phase X into before_X, the body, after_cancel_X (on CancelXException) and after_X.
Only the nesting of phases (fit > epoch > train/validate > batch > backward/step) is written here,
because it lives in fastai's code, not in its data. Any fastai event this structure does not
place is reported, never dropped.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

import fastai
from fastai.callback import core as fastai_core
from fastai.callback.core import Callback, GatherPredsCallback
from fastcore.foundation import L

from loopviz.adapters.fastai.descriptions import CANCEL_DESCRIPTIONS, WORK, describe_event
from loopviz.adapters.fastai.handlers import callback_info, find_handler, handler_names
from loopviz.errors import LoopvizError
from loopviz.model import CancelPath, Event, Handler, LoopSpec, Mode, Phase, Role, Step

__all__ = ["LOOPS", "build_spec", "preview_callbacks"]


def _fastai_events() -> list[str]:
    """fastai's own list of events, in the order it declares them."""
    return list(fastai_core._events)


def _fastai_inner_loop() -> list[str]:
    """The batch-level events that fastai filters with run_train/run_valid."""
    return list(fastai_core._inner_loop)


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
        self.infos = [callback_info(cb) for cb in self.cbs]
        self.events = _fastai_events()
        self.inner_loop = _fastai_inner_loop()
        self.placed: set[str] = set()

    def handlers(self, name: str, mode: Mode | None) -> list[Handler]:
        """Every callback's handler for `name`, in fastai's call order."""
        found = []
        for cb, info in zip(self.cbs, self.infos):
            handler = find_handler(cb, info, name, mode, self.inner_loop, self.learn)
            if handler is not None and name == "after_create" and id(cb) in self.added:
                handler = replace(handler, skipped="added after Learner.__init__")
            if handler is not None:
                found.append(handler)
        return found

    def event(self, name: str, mode: Mode | None, role: Role = "body", cancel: CancelPath | None = None) -> Event | None:
        """An event with its handlers, or None when this fastai has no such event."""
        if name not in self.events:
            return None
        self.placed.add(name)
        return Event(name, describe_event(name), self.handlers(name, mode), role=role, cancel=cancel, mode=mode)

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
        if mode == "train":
            only_training = "Only when training and the batch has targets."
            body += [
                self.phase("backward", "Backward", [WORK["backward"]], mode=mode, note=only_training, minor=True),
                self.phase("step", "Step", [WORK["step"]], mode=mode, note=only_training, minor=True),
                WORK["zero_grad"],
            ]
        phase = self.phase("batch", "Batch Loop", body, mode=mode, repeat=f"for each batch of {source}")
        phase.steps.insert(0, WORK["draw"])
        return phase

    def train(self) -> Phase:
        """The training part of an epoch."""
        return self.phase("train", "Train", [self.batch("train", "dls.train")], mode="train")

    def validate(self, source: str = "dls.valid") -> Phase:
        """The validation part of an epoch (or of validate/get_preds)."""
        return self.phase("validate", "Valid", [self.batch("valid", source)], mode="valid")

    def create(self) -> Phase:
        """Learner.__init__, where after_create fires once."""
        return Phase(
            "create", "Create", [s for s in [self.event("after_create", None)] if s is not None],
            note="Learner.__init__ fires after_create, once.",
        )

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


# loop name -> (callbacks the entry point adds itself, phase builder)
LOOPS: dict[str, tuple[Callable[[], list[Callback]], Callable[[_Builder], list[Phase]]]] = {
    "fit": (list, _fit_spec),
    "fit_one_cycle": (lambda: [_one_cycle_scheduler()], _fit_one_cycle_spec),
    "fine_tune": (lambda: [_one_cycle_scheduler()], _fine_tune_spec),
    "validate": (list, _validate_spec),
    "get_preds": (lambda: [GatherPredsCallback()], _get_preds_spec),
    "lr_find": (lambda: [_lr_finder()], _lr_find_spec),
}


def preview_callbacks(learn: Any, added: Sequence[Callback]) -> list[Callback]:
    """The learner's callbacks plus `added`, in fastai's call order (stable on ties), attaching nothing."""
    return list(L([*learn.cbs, *added]).sorted("order"))


def _added_callbacks(cbs: Any, added_by_loop: Sequence[Callback] = ()) -> list[Callback]:
    """The callbacks a loop adds for its duration: the entry point's own, then the user's `cbs`."""
    return [*added_by_loop, *[_as_callback(cb) for cb in _listify(cbs)]]


def _listify(cbs: Any) -> list[Any]:
    """`cbs` as a list: None -> [], one callback -> [it]."""
    if cbs is None:
        return []
    if isinstance(cbs, (list, tuple, L)):
        return list(cbs)
    return [cbs]


def _as_callback(cb: Any) -> Callback:
    """A callback instance from an instance or a class; a clear error for anything else."""
    if isinstance(cb, type) and issubclass(cb, Callback):
        try:
            return cb()
        except Exception as e:
            raise LoopvizError(
                f"cbs: cannot create {cb.__name__}() without arguments ({type(e).__name__}: {e}). "
                f"Pass an instance instead, e.g. cbs=[{cb.__name__}(...)]."
            ) from e
    if not isinstance(cb, Callback):
        raise LoopvizError(
            f"cbs must hold fastai Callback instances or classes; got {type(cb).__name__} {cb!r}."
        )
    return cb


def build_spec(learn: Any, loop: str = "fit", cbs: Any = None) -> LoopSpec:
    """The loop `learn` would run for `loop` (a key of `LOOPS`, e.g. 'fit' or 'get_preds'), with `cbs` previewed."""
    if loop not in LOOPS:
        raise LoopvizError(f"loop={loop!r} is not a loop loopviz knows; choose one of: {', '.join(LOOPS)}.")
    loop_cbs, build_phases = LOOPS[loop]
    added = _added_callbacks(cbs, loop_cbs())
    builder = _Builder(learn, preview_callbacks(learn, added), added)
    phases = build_phases(builder)
    notes: list[str] = []
    custom = builder.custom_events()
    if loop in ("fit", "fit_one_cycle"):
        unplaced = [e for e in builder.events if e not in builder.placed]
        for name in unplaced:
            notes.append(f"fastai event {name} has no place in loopviz's loop structure; it is listed with custom events.")
            custom.append(Event(name, describe_event(name), builder.handlers(name, None)))
    return LoopSpec(
        loop=loop, framework=f"fastai {fastai.__version__}", phases=phases,
        callbacks=builder.infos, custom_events=custom, notes=notes,
    )

