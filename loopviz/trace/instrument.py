"""The one instrumentation kernel under every tracer: attribute patches on classes, modules and instances, and
settings (torch's sync debug mode), installed and put back under one lock.

- **Install** remembers what the owner's own `__dict__` held for the name (the attribute, or its absence) and puts
  the wrapper there: on a class or a module by `setattr`, on an instance straight into its `__dict__` (past a
  `__setattr__` such as `nn.Module`'s). A setting remembers the value its getter gave.
- **Restore** puts back exactly what was there (or deletes the attribute) when the owner still holds our wrapper.
  Two patches of one attribute stack (each tracer holds its own, in a `PatchSet`); restored in either order, the
  owner ends with what was there before the first.
- **A foreign value over ours.** When other code (the user, another library) has put its own value over our wrapper
  while it was installed, restore leaves that value in place, with a `RuntimeWarning`: putting ours back would undo
  their change, and theirs may call ours. Ours stays where their value can reach it, inert: every loopviz wrapper
  passes calls straight through once its trace has ended (the shared wrappers of classes and modules look their
  trace up by the traced object and find none; an instance wrapper checks its tracer's `active`). A wrapper left on
  a class or a module is kept as *stranded*: a later install of the same attribute takes it back into use while it is
  still reachable (the foreign value still there, or found along the `__wrapped__` chain), so a later trace never
  stacks a second wrapper of ours under the first (which would record every call twice); one the foreign code has
  put back on the owner by itself is restored at the next install or restore. A setting changed by other code while
  ours was in force is left as they set it.

Everything here runs under one re-entrant lock. A trace may be ended by the garbage collector (its learner was
collected) at any bytecode, also in the middle of an install in the same thread: `guarded()` blocks count their
depth per thread and `run_or_defer` postpones such an ending until the thread's outermost guarded block ends, so it
never sees a half-installed set of patches and never deadlocks on the lock its own thread holds.

Patches are invisible to the framework: a wrapper on an instance answers a framework's override check as the
attribute it wraps would (`invisible`). `outcome` is the one classifier of how a call ended, given the adapter's
cancel exceptions. `installed()` and `stranded()` are what the leak check after each test reads.
"""
from __future__ import annotations

import threading
import types
import warnings
import weakref
from typing import Any, Callable

from loopviz.trace.layout import CANCELLED, ERROR

__all__ = ["Patch", "PatchSet", "DispatchStack", "guarded", "run_or_defer", "install", "install_setting", "restore", "release",
           "installed",
           "stranded", "put", "invisible", "outcome", "MISSING"]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>"})()  # an owner's __dict__ held no such name

_LOCK = threading.RLock()
_DEFERRED: list[Callable[[], None]] = []  # endings the garbage collector asked for inside a guarded block


class Patch:
    """One installed attribute (owner, name) or setting (owner None, `name` its label, `access` its getter and setter):
    what was there before and what loopviz put there. An instance owner and the wrapper on it are held weakly, so
    that a patch never keeps the traced object alive (a patch whose instance was collected is gone with it)."""

    def __init__(self, owner: Any, name: str, before: Any, wrapper: Any,
                 access: tuple[Callable[[], Any], Callable[[Any], Any]] | None = None):
        self.name, self.before, self.access = name, before, access
        self.over: Any = MISSING  # the foreign value found over the wrapper when it was stranded
        self.key = (id(owner), name)  # the registry's key: (id of the owner, name)
        self._owner = _weak(owner)
        # on an instance held weakly (the instance holds it); on a class or module, strongly (a foreign value put
        # over it may be all that else holds it)
        self._wrapper = _weak(wrapper) if owner is not None and not _shared(owner) else (lambda: wrapper)

    @property
    def owner(self) -> Any:
        """The patched class, module or instance (None for a setting, or an instance since collected)."""
        return self._owner()

    @property
    def wrapper(self) -> Any:
        """What loopviz put there (None once its instance was collected)."""
        return self._wrapper()

    @property
    def dead(self) -> bool:
        """True when the patched instance has been collected: nothing is left to put back."""
        return self.access is None and self._owner() is None

    def where(self) -> str:
        """'Owner.name' for messages."""
        if self.owner is None:
            return self.name
        owner = self.owner if isinstance(self.owner, (type, types.ModuleType)) else type(self.owner)
        return f"{getattr(owner, '__name__', owner)}.{self.name}"


def _weak(value: Any) -> Callable[[], Any]:
    """A weak reference to an instance (or a function put on one), a strong one to anything else."""
    if value is not None and not _shared(value):
        try:
            return weakref.ref(value)
        except TypeError:  # no __weakref__ slot: held strongly
            pass
    return lambda: value


_INSTALLED: dict[tuple[int, str], list[Patch]] = {}  # (id(owner), name) -> its patches, the latest last
_STRANDED: dict[tuple[int, str], Patch] = {}


class _Guarded:
    """`guarded()`: the kernel's lock, with the depth of the thread that holds it counted (a class, not a generator:
    it is entered at every install and restore)."""

    depth = 0  # changed only by the thread holding _LOCK

    def __enter__(self) -> None:
        _LOCK.acquire()
        self.depth += 1

    def __exit__(self, *exc: Any) -> None:
        try:
            self.depth -= 1
            while not self.depth and _DEFERRED:
                _DEFERRED.pop()()
        finally:
            _LOCK.release()


_GUARDED = _Guarded()


def guarded() -> _Guarded:
    """Hold the kernel's lock; endings the garbage collector asks for meanwhile in this thread run when the outermost
    guarded block of the thread ends."""
    return _GUARDED


def run_or_defer(action: Callable[[], None]) -> bool:
    """Run `action` now, or, when this thread is inside a guarded block (the garbage collector interrupted it), when
    that block ends; True when it was deferred. (Another thread's action runs now: it waits for the lock.)"""
    if _GUARDED.depth and _LOCK._is_owned():  # type: ignore[attr-defined]
        _DEFERRED.append(action)
        return True
    action()
    return False


def _shared(owner: Any) -> bool:
    return isinstance(owner, (type, types.ModuleType))


def _own(owner: Any, name: str) -> Any:
    """What the owner's own `__dict__` holds for `name` (MISSING: nothing)."""
    return vars(owner).get(name, MISSING)


def _put(owner: Any, name: str, value: Any) -> None:
    """Set (or, for MISSING, delete) `name` in the owner's own `__dict__`."""
    if _shared(owner):
        if value is MISSING:
            if name in vars(owner):
                delattr(owner, name)
        else:
            setattr(owner, name, value)
    elif value is MISSING:
        owner.__dict__.pop(name, None)
    else:
        owner.__dict__[name] = value


def _reaches(value: Any, wrapper: Any) -> bool:
    """True when `wrapper` is `value` or lies along its `__wrapped__` chain."""
    for _ in range(100):  # a chain that loops on itself ends here
        if value is wrapper:
            return True
        value = getattr(value, "__wrapped__", None)
        if value is None:
            return False
    return False


def _revive(owner: Any, name: str) -> Patch | None:
    """A stranded wrapper of this attribute still in use (reachable from the owner's value) is installed again."""
    patch = _STRANDED.pop((id(owner), name), None)
    if patch is None:
        return None
    value = _own(owner, name)
    if value is patch.over or _reaches(value, patch.wrapper):
        return _register(patch)
    return None


def install(owner: Any, name: str, make: Callable[[Any], Any]) -> Patch:
    """Put `make(what getattr gives now)` at `owner.name` and return the patch (a stranded wrapper of a class's or a
    module's attribute that is still reachable is taken back into use instead)."""
    return _install(owner, name, make, MISSING)


def put(owner: Any, name: str, value: Any) -> Patch:
    """Put `value` at `owner.name` (an instance's own attribute, or a class's), remembering what was there."""
    return _install(owner, name, None, value)


def _install(owner: Any, name: str, make: Callable[[Any], Any] | None, value: Any) -> Patch:
    with _GUARDED:
        key = (id(owner), name)
        if _STRANDED and key in _STRANDED and _shared(owner):
            revived = _revive(owner, name)
            if revived is not None:
                return revived
        before = vars(owner).get(name, MISSING)
        wrapper = make(getattr(owner, name)) if make is not None else value
        _put(owner, name, wrapper)
        return _register(Patch(owner, name, before, wrapper))


def _register(patch: Patch) -> Patch:
    stack = _INSTALLED.get(patch.key)
    if stack is None:
        _INSTALLED[patch.key] = [patch]
    else:
        stack[:] = [held for held in stack if not held.dead]  # the key of a collected instance, reused
        stack.append(patch)
    return patch


def install_setting(label: str, get: Callable[[], Any], set_: Callable[[Any], Any], value: Any) -> Patch:
    """Set a setting (e.g. torch's sync debug mode) to `value`, remembering the value `get()` gave."""
    with guarded():
        patch = Patch(None, label, get(), value, access=(get, set_))
        set_(value)
        return _register(patch)


def restore(patch: Patch) -> None:
    """Put back what was there before `patch`, by the policy in the module's doc (a foreign value over ours stays)."""
    with _GUARDED:
        key = patch.key
        stack = _INSTALLED.get(key)
        if stack is None or patch not in stack:
            return  # restored already
        stack.remove(patch)
        if not stack:
            del _INSTALLED[key]
        if patch.dead:
            return  # its instance was collected, and our wrapper with it
        if patch.access is not None:
            get, set_ = patch.access
            if get() == patch.wrapper:  # else other code changed the setting since: theirs stays
                set_(patch.before)
            return
        value = _own(patch.owner, patch.name)
        if value is patch.wrapper:
            _put(patch.owner, patch.name, patch.before)
            if _STRANDED:
                _sweep()
            return
        above = next((p for p in stack if p.before is patch.wrapper), None)
        if above is not None:  # another patch of ours sits on this one: it puts back what this one found
            above.before = patch.before
        else:
            _strand(patch, value)
        _sweep()


def release(patch: Patch) -> None:
    """Forget `patch` without putting anything back: the owner's own code has replaced our wrapper on purpose (a
    callback that sets its handler during a traced fit), so what it set stays, and restoring must not undo it."""
    with _GUARDED:
        stack = _INSTALLED.get(patch.key)
        if stack is not None and patch in stack:
            stack.remove(patch)
            if not stack:
                del _INSTALLED[patch.key]


def _strand(patch: Patch, value: Any) -> None:
    """Leave a foreign value over our wrapper in place (see the module's doc), keeping a class's or module's wrapper
    as stranded."""
    if value is MISSING:  # deleted by other code: nothing of ours is reachable, nothing to put back over theirs
        return
    warnings.warn(
        f"loopviz: {patch.where()} was replaced by other code while tracing, so that code's value stays and loopviz's "
        "wrapper stays inside it (it passes every call straight through when nothing is traced).",
        RuntimeWarning, stacklevel=4,
    )
    if _shared(patch.owner):
        patch.over = value
        _STRANDED[patch.key] = patch


def _sweep() -> None:
    """Restore stranded wrappers the foreign code has put back on their owner by itself; forget unreachable ones."""
    for key, patch in list(_STRANDED.items()):
        value = _own(patch.owner, patch.name)
        if value is patch.wrapper:
            _put(patch.owner, patch.name, patch.before)
            del _STRANDED[key]
        elif value is not patch.over and not _reaches(value, patch.wrapper):
            del _STRANDED[key]


def installed() -> list[Patch]:
    """The patches in force now (an empty list when nothing is traced: the leak check after each test reads it)."""
    with guarded():
        for key, stack in list(_INSTALLED.items()):
            stack[:] = [patch for patch in stack if not patch.dead]
            if not stack:
                del _INSTALLED[key]
        return [patch for stack in _INSTALLED.values() for patch in stack]


def stranded() -> list[Patch]:
    """Wrappers left under a foreign value at restore (see the module's doc)."""
    with guarded():
        _sweep()
        return list(_STRANDED.values())


def outcome(error: BaseException, cancels: tuple[type[BaseException], ...] | None) -> int:
    """The status of a call or firing that `error` ended: CANCELLED when it is one of the loop's cancel exceptions
    (`cancels`, which the adapter passes; empty for loops that stop by flags; None: any exception class named
    Cancel..., for loops whose exceptions are their users' own classes), else ERROR."""
    if cancels is None:
        return CANCELLED if type(error).__name__.startswith("Cancel") else ERROR
    return CANCELLED if isinstance(error, cancels) else ERROR


def invisible(wrapper: Any, wrapped: Any) -> Any:
    """`wrapper` (made with `functools.wraps(wrapped)`) seen by a framework's override check as `wrapped` is: its
    `__wrapped__` is what `wrapped.__wrapped__` is, or `wrapped` itself where it has none. Checks that unwrap one level
    (e.g. an override check that takes one `__wrapped__`, then a partial or a Mock) then reach what they reach from
    `wrapped`, and `inspect.unwrap` ends where it ends from `wrapped`."""
    wrapper.__wrapped__ = getattr(wrapped, "__wrapped__", wrapped)
    return wrapper


class PatchSet:
    """The patches one tracer holds (a wrapped dispatch method, timed handlers, entry points...): `put`/`install`
    through the kernel, `restore()` puts back every one of them, the last first."""

    def __init__(self) -> None:
        self.held: dict[tuple[int, str], Patch] = {}

    def __contains__(self, key: tuple[int, str]) -> bool:
        return key in self.held

    def __len__(self) -> int:
        return len(self.held)

    def install(self, owner: Any, name: str, make: Callable[[Any], Any]) -> Patch:
        """Install `make(original)` at `owner.name` through the kernel and hold it."""
        patch = self.held.get((id(owner), name))
        if patch is None:
            patch = self.held[(id(owner), name)] = _install(owner, name, make, MISSING)
        return patch

    def put(self, owner: Any, name: str, value: Any) -> Patch:
        """Put `value` at `owner.name` through the kernel and hold it."""
        patch = self.held.get((id(owner), name))
        if patch is None:
            patch = self.held[(id(owner), name)] = _install(owner, name, None, value)
        return patch

    def setting(self, label: str, get: Callable[[], Any], set_: Callable[[Any], Any], value: Any) -> Patch:
        """Set a setting to `value` through the kernel and hold it."""
        patch = self.held.get((id(None), label))
        if patch is None:
            patch = self.held[(id(None), label)] = install_setting(label, get, set_, value)
        return patch

    def restore(self) -> None:
        """Put back every held patch, the last first."""
        with _GUARDED:
            while self.held:
                _, patch = self.held.popitem()
                restore(patch)


class DispatchStack(threading.local):
    """Per thread, the traces whose dispatch the thread is inside now, innermost last: a timed handler records a call
    only when its own trace is the innermost (a callback or module shared by two traced loops is timed by each for its
    own loop's calls). Each tracer module keeps one."""

    def __init__(self) -> None:
        self.inside: list[Any] = []
