"""An independent record of what fastai really dispatched, written without loopviz.

`spy(learn)` wraps fastai's own dispatch for the duration of a `with` block and writes down, from fastai's
side of the fence:

- every event firing, from `Learner._call_one` (whatever is installed there): event name, phase key,
  firing order, nesting, start/end time, and which exception (if any) escaped it;
- every callback call, from `Callback.__call__` (and the `__call__` of callback classes that override
  it): which callback, at which firing, whether the callback had a handler for the event at all, and
  what fastai did with it;
- which handlers really ran, from `fastai.callback.core.getcallable`: fastai's `Callback.__call__` calls
  `getcallable(self, event_name)()` only when its run predicate passes, so a `getcallable` that returns
  something other than fastcore's `noop` during a call is a handler that ran (own, inherited, set on the
  instance, or delegated through `GetAttr` to the learner or its model). For a class that overrides
  `__call__` (e.g. `fastai.test_utils.VerboseCallback`), the overriding `__call__` itself is the handler:
  each invocation counts as a run.

Phase key, read from `learn.training` when the firing starts (before any callback runs; it is what
`Callback.__call__` reads through `GetAttr` as `getattr(cb, 'training')`):
  - events in `fastai.callback.core._inner_loop`, and `after_cancel_step`: 'train' or 'valid';
  - before_train / after_train / after_cancel_train: 'train';
  - before_validate / after_validate / after_cancel_validate: 'valid';
  - every other event: ''.

Nothing here imports loopviz or reuses its logic. Install the spy *before* entering `learn.trace()`, so
loopviz wraps the spy's wrappers (it wraps whatever is installed) and the spy sees fastai's own calls.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Iterable, Iterator

from fastai.callback import core as fastai_core
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastcore.basics import getcallable as _probe  # fastcore's own, never a wrapped copy
from fastcore.basics import noop

__all__ = ["Spy", "Firing", "Call", "spy", "phase_key", "overriding_classes"]

_TRAIN_LEVEL = frozenset({"before_train", "after_train", "after_cancel_train"})
_VALID_LEVEL = frozenset({"before_validate", "after_validate", "after_cancel_validate"})


def phase_key(event: str, training: bool) -> str:
    """'train', 'valid' or '' for an event fired while `learn.training` was `training`."""
    if event in fastai_core._inner_loop or event == "after_cancel_step":
        return "train" if training else "valid"
    if event in _TRAIN_LEVEL:
        return "train"
    if event in _VALID_LEVEL:
        return "valid"
    return ""


def overriding_classes(cbs: Iterable[Any]) -> list[type]:
    """The classes (one per callback type) whose instances use a `__call__` other than `Callback.__call__`."""
    found: list[type] = []
    for cb in cbs:
        owner = next((k for k in type(cb).__mro__ if "__call__" in vars(k)), None)
        if owner is not None and owner is not Callback and owner not in found:
            found.append(owner)
    return found


@dataclass
class Firing:
    """One event firing, as fastai's `Learner._call_one` ran it."""

    index: int
    event: str
    phase: str
    learner: int  # id() of the learner that fired it
    parent: int  # index of the firing it happened inside (-1: top level)
    start_ns: int
    end_ns: int = 0
    ran: list[str] = field(default_factory=list)  # callback classes whose handler ran, in call order
    raised_by: str | None = None  # class of the callback whose call raised (the rest were not called)
    escaped: str | None = None  # exception type that escaped the firing


@dataclass
class Call:
    """One call of a callback by fastai at one firing."""

    firing: int
    cls: str
    event: str
    phase: str
    has_handler: bool  # the callback had something to run for this event (probed before the call)
    status: str = "skipped"  # 'ran' | 'no_handler' (predicate passed, nothing to run) | 'skipped' (predicate failed)
    overrider: bool = False
    raised: str | None = None  # exception type raised by the call


@dataclass
class Spy:
    """What fastai really did while the spy was installed."""

    learner: int | None  # id() of the watched learner, None: every learner
    firings: list[Firing] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    displaced: list[str] = field(default_factory=list)  # wrappers someone replaced and did not put back
    _open: list[Firing] = field(default_factory=list)
    _active: list[tuple[Any, Call]] = field(default_factory=list)

    # -- queries ------------------------------------------------------------------------------

    def firing_counts(self) -> Counter:
        """(event, phase) -> number of firings."""
        return Counter((f.event, f.phase) for f in self.firings)

    def callback_counts(self) -> dict[tuple[str, str, str], Counter]:
        """(callback class, event, phase) -> Counter of 'calls', 'handler_calls', 'ran', 'no_handler', 'skipped'
        ('skipped_handler': calls of a callback with a handler that fastai's run predicate skipped)."""
        out: dict[tuple[str, str, str], Counter] = {}
        for c in self.calls:
            n = out.setdefault((c.cls, c.event, c.phase), Counter())
            n["calls"] += 1
            n[c.status] += 1
            if c.has_handler:
                n["handler_calls"] += 1
                if c.status == "skipped":
                    n["skipped_handler"] += 1
        return out

    def no_handler_calls(self) -> int:
        """Calls whose run predicate passed but that found nothing to run (getcallable returned noop)."""
        return sum(c.status == "no_handler" for c in self.calls)

    def top_level(self) -> list[Firing]:
        return [f for f in self.firings if f.parent == -1]

    def cancelled(self) -> bool:
        """True when any after_cancel_* event fired or an exception escaped a firing."""
        return any(f.event.startswith("after_cancel_") or f.escaped for f in self.firings)

    # -- the wrappers -------------------------------------------------------------------------

    def _watches(self, learn: Any) -> bool:
        return self.learner is None or id(learn) == self.learner

    def _current_call(self, cb: Any, event: str) -> Call | None:
        if self._active and self._active[-1][0] is cb and self._active[-1][1].event == event:
            return self._active[-1][1]
        return None

    def _super_call(self, cb: Any, event: str, firing: Firing) -> bool:
        """True for `super().__call__` from an overriding class: the callback's call for this event at this very
        firing is already open. At a newer firing (a loop its handler ran, e.g. get_preds from after_epoch), fastai
        is calling it again: a call of its own."""
        call = self._current_call(cb, event)
        return call is not None and call.firing == firing.index

    def wrap_call_one(self, original: Any) -> Any:
        def _call_one(learn: Any, event_name: str) -> Any:
            if not self._watches(learn):
                return original(learn, event_name)
            training = bool(getattr(learn, "training"))
            parent = self._open[-1].index if self._open else -1
            firing = Firing(len(self.firings), event_name, phase_key(event_name, training), id(learn), parent,
                            perf_counter_ns())
            self.firings.append(firing)
            self._open.append(firing)
            try:
                return original(learn, event_name)
            except BaseException as e:
                firing.escaped = type(e).__name__
                raise
            finally:
                firing.end_ns = perf_counter_ns()
                self._open.pop()

        _call_one.__spy_wrapper__ = True  # type: ignore[attr-defined]
        return _call_one

    def _open_firing_for(self, cb: Any) -> Firing | None:
        """The innermost open firing, when it belongs to this callback's learner."""
        if not self._open:
            return None
        firing = self._open[-1]
        learn = vars(cb).get("learn")
        return firing if learn is not None and id(learn) == firing.learner else None

    def wrap_callback_call(self, original: Any) -> Any:
        def __call__(cb: Any, event_name: str) -> Any:
            firing = self._open_firing_for(cb)
            if firing is None or self._super_call(cb, event_name, firing):
                # not inside a watched firing, or super().__call__ from an overriding class (already counted)
                return original(cb, event_name)
            has_handler = _probe(cb, event_name) is not noop
            call = Call(firing.index, type(cb).__name__, event_name, firing.phase, has_handler)
            return self._run_call(cb, event_name, firing, call, original)

        __call__.__spy_wrapper__ = True  # type: ignore[attr-defined]
        return __call__

    def wrap_overriding_call(self, original: Any) -> Any:
        def __call__(cb: Any, event_name: str) -> Any:
            firing = self._open_firing_for(cb)
            if firing is None or self._super_call(cb, event_name, firing):
                return original(cb, event_name)
            call = Call(firing.index, type(cb).__name__, event_name, firing.phase, True, "ran", overrider=True)
            firing.ran.append(call.cls)
            return self._run_call(cb, event_name, firing, call, original)

        __call__.__spy_wrapper__ = True  # type: ignore[attr-defined]
        return __call__

    def _run_call(self, cb: Any, event_name: str, firing: Firing, call: Call, original: Any) -> Any:
        self._active.append((cb, call))
        try:
            return original(cb, event_name)
        except BaseException as e:
            call.raised = type(e).__name__
            if firing.raised_by is None:
                firing.raised_by = call.cls
            raise
        finally:
            self._active.pop()
            self.calls.append(call)

    def wrap_getcallable(self, original: Any) -> Any:
        def getcallable(o: Any, attr: str) -> Any:
            result = original(o, attr)
            call = self._current_call(o, attr)
            if call is not None and not call.overrider:
                call.status = "no_handler" if result is noop else "ran"
                if result is not noop:
                    self.firings[call.firing].ran.append(call.cls)
            return result

        getcallable.__spy_wrapper__ = True  # type: ignore[attr-defined]
        return getcallable


_MISSING = object()


@contextmanager
def spy(learn: Learner | None = None, cbs: Iterable[Any] = ()) -> Iterator[Spy]:
    """Record what fastai dispatches for `learn` (every learner when None) inside the block.

    `cbs`: callbacks not yet attached to the learner (passed to the loop call or to the learner's
    constructor) whose classes may override `__call__`; those of `learn.cbs` are found by themselves.
    """
    s = Spy(None if learn is None else id(learn))
    candidates = [*(learn.cbs if learn is not None else []), *cbs]
    patches: list[tuple[Any, str, Any, Any]] = []  # (owner, name, previous value or _MISSING, wrapper)

    def install(owner: Any, name: str, wrapper_factory: Any) -> None:
        previous = vars(owner).get(name, _MISSING)
        wrapper = wrapper_factory(getattr(owner, name))
        setattr(owner, name, wrapper)
        patches.append((owner, name, previous, wrapper))

    try:
        install(Learner, "_call_one", s.wrap_call_one)
        install(Callback, "__call__", s.wrap_callback_call)
        for klass in overriding_classes(candidates):
            install(klass, "__call__", s.wrap_overriding_call)
        install(fastai_core, "getcallable", s.wrap_getcallable)
        yield s
    finally:
        while patches:
            owner, name, previous, wrapper = patches.pop()
            if vars(owner).get(name) is not wrapper:
                s.displaced.append(f"{getattr(owner, '__name__', owner)}.{name}")
            if previous is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, previous)
