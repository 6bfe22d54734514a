"""Timed handlers: the wrapper a fastai trace puts on a callback *instance* for each event it handles.

fastai's `Callback.__call__` decides, by the callback's run flags, whether to ask `getcallable(cb, event)` for the
handler and call it; an instance attribute is what that lookup finds first, so a timed wrapper in `cb.__dict__[event]`
is called exactly when fastai runs the handler, and a callback with no handler for an event is never touched. fastai's
own code is unchanged: a timed call is a handler that really ran.

A wrapper times its call only inside a firing of its own trace (anything else calling it, e.g. user code calling
`cb.after_batch()` between fits, passes straight through), records the call, and marks its `Slot` with the firing's
serial, so that the firing can tell, as it ends, which callbacks with a handler did not run (skipped by their flags).
The wrapper carries `introspect.SHADOWS` (what it shadows in the instance's `__dict__`), so loopviz's own
introspection, pickling (`__getstate__`) and deep copies see the callback as its code left it.
"""
from __future__ import annotations

import functools
import inspect
import weakref
from typing import Any, Callable

from fastcore.basics import noop

from loopviz.adapters.fastai.changes import changed_state, state_snapshot
from loopviz.introspect import SHADOWS, is_shadowing
from loopviz.trace.instrument import MISSING, outcome
from loopviz.trace.record import HotPath

__all__ = ["Slot", "make_timed", "make_changes", "make_tracked", "resolve_handler", "surely_no_handler", "is_timed",
           "reaches", "takes_nothing"]


class Slot:
    """One (callback, event) a trace times: the callback (weakly), its trace id once it has one (-1 before), the serial
    of the last firing in which its handler ran (None: none yet), and the wrapper's patch while the wrapper is in
    place."""

    __slots__ = ("cb", "key", "event", "cid", "ran", "patch", "wrapper", "__weakref__")

    def __init__(self, cb: Any, event: str, on_collect: Callable[[int], None]):
        self.key = id(cb)
        self.event = event
        self.cid = -1
        self.ran: int | None = None
        self.patch: Any = None  # the kernel's Patch of cb.__dict__[event] while the wrapper is there
        self.wrapper: Any = None  # weak reference to the wrapper
        try:
            self.cb = weakref.ref(cb, lambda _, key=self.key: on_collect(key))
        except TypeError:  # a callback class with __slots__ and no __weakref__: held, its id stays its own
            self.cb = lambda cb=cb: cb

    def rebind(self, handler: Any) -> bool:
        """Point the wrapper at `handler` (found again at a loop's start); False when the wrapper cannot call it (it
        takes arguments, the lean wrapper none: the wrapper must be made again). The handler is held by the wrapper
        only (a cycle through the callback), never by the trace, which holds its learner and callbacks weakly."""
        wrapper = self.wrapper() if self.wrapper is not None else None
        if wrapper is None:
            return True
        if getattr(wrapper, "__loopviz_lean__", False) and not takes_nothing(handler):
            return False
        wrapper.__loopviz_box__[0] = handler
        return True

    @property
    def active(self) -> bool:
        """True while the wrapper is in the callback's `__dict__` (the handler is timed)."""
        return self.patch is not None


def resolve_handler(cb: Any, event: str, ours: Any = None) -> Any:
    """What fastai's `getcallable(cb, event)` (fastcore's `getattr(cb, event, noop)`) finds, with `ours` (a timed
    wrapper of this trace in the callback's `__dict__`, if given) seen through; None when it finds no handler (nothing,
    or `noop`). Another trace's wrapper is what fastai finds, and is called under ours (each records its own calls)."""
    own = cb.__dict__ if isinstance(getattr(cb, "__dict__", None), dict) else {}
    if ours is not None and own.get(event, MISSING) is ours:
        shadowed = getattr(ours, SHADOWS)
        if shadowed:
            own[event] = shadowed[0]
        else:
            del own[event]
        try:
            found = _found(cb, event)
        finally:
            own[event] = ours
    else:
        found = _found(cb, event)
    return None if found is noop or not callable(found) else found


def takes_nothing(handler: Any) -> bool:
    """True when `handler` has no parameters (fastai's handlers: methods of `self` alone), so that a wrapper with none
    is called exactly as the handler is: with no arguments, or a TypeError as the handler would raise."""
    code = getattr(getattr(handler, "__func__", None), "__code__", None)
    if code is not None and hasattr(handler, "__self__"):  # a bound method: its first parameter is bound
        plain = not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
        return plain and code.co_argcount == 1 and code.co_kwonlyargcount == 0
    try:
        return not inspect.signature(handler).parameters
    except (TypeError, ValueError):  # no signature to read: not known to take nothing
        return False


def surely_no_handler(cb: Any, event: str, learn_has: bool) -> bool:
    """True when fastai finds no handler for `event` on `cb`, known without `resolve_handler`'s lookup: nothing on the
    instance or its classes, and the learner it delegates to (and its model) has no such attribute (`learn_has`), so
    asking the callback would only raise and catch an AttributeError down the delegation chain."""
    own = getattr(cb, "__dict__", None)
    if isinstance(own, dict) and event in own:
        return False
    return not learn_has and not any(event in vars(klass) for klass in type(cb).__mro__)


def _found(cb: Any, event: str) -> Any:
    try:
        return getattr(cb, event, noop)
    except Exception:  # a delegate's property may raise anything: no handler fastai could reach either
        return noop


def is_timed(value: Any) -> bool:
    """True for a timed wrapper of ours (it shadows an instance attribute, `introspect.is_shadowing`, and has a slot)."""
    return is_shadowing(value) and hasattr(value, "__loopviz_slot__")


def reaches(value: Any, wrapper: Any) -> bool:
    """True when `value` is `wrapper` or calls it (another trace's timed wrapper put over it)."""
    for _ in range(10):
        if value is wrapper:
            return True
        if not is_timed(value):
            return False
        value = value.__loopviz_box__[0]
    return False


def make_timed(slot: Slot, handler: Any, live: list[Any], hot: HotPath, register: Callable[[Slot], int],
               raised: Callable[[Slot], None], cancels: tuple[type, ...], ran: int) -> Callable[..., Any]:
    """The timed wrapper of `handler`, which takes no arguments (`takes_nothing`), for `slot`: inside a firing of its
    trace (`live[0]`, the serial of the innermost open firing, not None) it times the call, records it (by the
    recorder's `HotPath` protocol) and marks the slot; outside one it passes straight through. Its trace's state is
    reached only through closure cells, and it takes no arguments itself (no tuple or dict to build): this runs at
    every handler call fastai makes."""
    box = [handler]
    now, calls, add_call, call_limit, record = hot.now, hot.calls, hot.add_call, hot.call_limit, hot.call

    def failed(serial: int, start: int, error: BaseException) -> None:
        slot.ran = serial
        raised(slot)
        record(slot.cid if slot.cid >= 0 else register(slot), start, now(), outcome(error, cancels))

    @functools.wraps(handler)
    def timed() -> Any:
        serial = live[0]
        if serial is None:
            return box[0]()
        start = now()
        try:
            result = box[0]()
        except BaseException as error:
            failed(serial, start, error)
            raise
        end = now()
        slot.ran = serial
        cid = slot.cid
        # under call_limit the innermost open firing has a row, and its serial is that row's index (`HotPath`)
        if cid >= 0 and len(calls) < call_limit[0]:
            add_call((start, serial, cid, end - start, ran))
        else:
            record(cid if cid >= 0 else register(slot), start, end, ran)
        return result

    timed.__loopviz_lean__ = True  # type: ignore[attr-defined]
    return _mark(timed, slot, box)


def make_changes(slot: Slot, handler: Any, live: list[Any], state: Any, attrs: dict[str, Any],
                 register: Callable[[Slot], int], cancels: tuple[type, ...], ran: int) -> Callable[..., Any]:
    """The timed wrapper when the trace records what each call changes (changes=True) and nothing else besides: as
    `make_timed`, plus the learner attributes the call writes (`state.written`, filled by the wrapped
    `Learner.__setattr__`) and the optimizer's hyper-parameters compared before and after. `attrs`: the learner's
    `__dict__`. The lean path of `make_tracked`'s `before_call`/`after_call`, written out in one frame."""
    box = [handler]
    rec = state.rec
    now, record, changed = state.now, rec.call, rec.changed

    @functools.wraps(handler)
    def timed(*args: Any, **kwargs: Any) -> Any:
        serial = live[0]
        if serial is None:
            return box[0](*args, **kwargs)
        outer, written = state.written, {}
        state.written = written
        before = state_snapshot(attrs, False)
        status = ran
        start = now()
        try:
            return box[0](*args, **kwargs)
        except BaseException as error:
            status = outcome(error, cancels)
            state.raised(slot)
            raise
        finally:
            end = now()
            slot.ran = serial
            state.written = outer
            if outer is not None:  # what a nested call wrote, its caller wrote too
                for name, value in written.items():
                    outer.setdefault(name, value)
            cid = slot.cid
            if cid < 0:
                cid = register(slot)
            names = changed_state(attrs, written, before, False)
            if names:
                changed(cid, names)
            record(cid, start, end, status)

    return _mark(timed, slot, box)


def make_tracked(slot: Slot, handler: Any, live: list[Any], before_call: Callable[[Any], Any],
                 after_call: Callable[..., None], raised: Callable[[Slot], None]) -> Callable[..., Any]:
    """The timed wrapper when the trace does more per call (changes=, ranges=, waits=): `before_call(slot)` returns
    what `after_call(slot, opened, error_or_None, serial)` needs; both are the trace's (the slow path)."""
    box = [handler]

    @functools.wraps(handler)
    def timed(*args: Any, **kwargs: Any) -> Any:
        serial = live[0]
        if serial is None:
            return box[0](*args, **kwargs)
        opened = before_call(slot)
        error: BaseException | None = None
        try:
            return box[0](*args, **kwargs)
        except BaseException as caught:
            error = caught
            raised(slot)
            raise
        finally:
            slot.ran = serial
            after_call(slot, opened, error)

    return _mark(timed, slot, box)


def _mark(timed: Any, slot: Slot, box: list[Any]) -> Any:
    """Mark a wrapper as ours: what it shadows (filled when it is put in place), its slot, and no `__wrapped__` chain
    longer than the handler's own (fastai and inspect see the handler)."""
    setattr(timed, SHADOWS, [])
    timed.__loopviz_slot__ = weakref.ref(slot)
    timed.__loopviz_wrapper__ = True
    timed.__loopviz_box__ = box
    slot.wrapper = weakref.ref(timed)
    return timed
