"""Reading callback objects without calling them: which handler an event reaches, how, its doc and source line.

Framework-free: adapters pass in what is specific to their framework, namely its callback base classes
(whose docs describe the framework, not the callback), the base whose `__call__` dispatches events (a
callback class replacing it receives every event) and the objects an unknown attribute is delegated to
(fastai: the learner, then its model, through fastcore's `GetAttr`).

    found = lookup(cb, "after_batch", delegates=(learn, learn.model))   # Found(handler, via) or None
    info = callback_info(cb, base_classes=(Callback,))
    handler = handler_for(cb, "after_batch", info, base_classes=(Callback,), delegates=(learn, learn.model))
"""
from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

from loopviz.model import CallbackInfo, Handler, SourceRef

__all__ = [
    "Found", "Via", "lookup", "forwards", "has_handler", "handler_for", "describe", "callback_info",
    "overrides_call", "call_owner", "handler_names", "is_event_like", "target_function", "source_ref",
    "own_doc", "class_doc", "inherited_doc", "generic_docs", "SHADOWS", "own_attribute", "is_shadowing", "shadowed",
]

Via = Literal["instance", "method", "delegated", "call"]
DocSource = Literal["handler", "inherited", "class", "none"]

_EVENT_LIKE = re.compile(r"^(before|after)_[a-z0-9_]+$")
_GENERIC_OBJECTS = (object, type, functools.partial, types.MethodType, types.FunctionType)
_NO_DOC = "(no docstring)"
_MISSING = object()
_UNWRAP_LIMIT = 10  # wrappers nest a few levels at most; the bound guards against cycles
# A function a tracer puts in an instance's `__dict__` (a timed handler, a learner's traced `_call_one`) carries this
# attribute: a list holding what it shadows there, or an empty list when the instance had nothing of its own there.
SHADOWS = "__loopviz_shadows__"


@dataclass(frozen=True)
class Found:
    """A handler as the loop would reach it: the object it calls, and how it was found."""

    handler: Any
    via: Via


# -- finding handlers ---------------------------------------------------------------------------


def is_event_like(name: str) -> bool:
    """True for names shaped like events: `before_*` / `after_*`."""
    return bool(_EVENT_LIKE.match(name))


def forwards(obj: Any, name: str) -> bool:
    """True when reading `name`, which `obj` lacks, reaches its `__getattr__` and is passed on to its delegate.

    fastcore's `GetAttr` is asked through its own `_component_attr_filter` (dunder names, `_xtra`
    and the delegate's own name stay put; a class with `_xtra` forwards only those names); any other
    `__getattr__` is taken to forward public names, as fastcore's `GetAttrBase` and `delegate_attr` do.
    """
    cls = type(obj)
    if getattr(cls, "__getattr__", None) is None:
        return False
    component_filter = getattr(cls, "_component_attr_filter", None)
    if callable(component_filter):
        return bool(component_filter(obj, name))
    return not name.startswith("_")


def _plain_attribute(obj: Any, name: str) -> Any:
    """`obj.name` found the normal way (instance, then class), never through `__getattr__`; _MISSING otherwise."""
    try:
        return type(obj).__getattribute__(obj, name)
    except AttributeError:
        return _MISSING


def _class_attribute(obj: Any, name: str) -> Any:
    """`obj.name` as its class gives it (bound as attribute access binds it), the instance's own `__dict__` left out;
    _MISSING when no class in its MRO defines it."""
    for klass in type(obj).__mro__:
        if name in vars(klass):
            value = vars(klass)[name]
            getter = getattr(type(value), "__get__", None)
            return getter(value, obj, type(obj)) if getter is not None else value
    return _MISSING


def _asked(obj: Any, name: str) -> Any:
    """`getattr(obj, name)` as the object answers it, `__getattr__` included; _MISSING when it fails."""
    try:
        return getattr(obj, name)
    except Exception:  # a delegate's property may raise anything; introspection must not
        return _MISSING


def _delegated(obj: Any, name: str, delegates: Sequence[Any]) -> Any:
    """What `obj.name` resolves to through the delegate chain (nearest first), or _MISSING.

    Each delegate is reached only when the object before it forwards `name`; the last one is asked
    outright, so its own `__getattr__` (a torch module's submodules, a further delegate) counts too.
    """
    holder = obj
    for position, target in enumerate(delegates):
        if target is None or not forwards(holder, name):
            return _MISSING
        last = position == len(delegates) - 1
        value = _asked(target, name) if last else _plain_attribute(target, name)
        if value is not _MISSING:
            return value
        holder = target
    return _MISSING


def is_shadowing(value: Any) -> bool:
    """True for a function a tracer put in an instance's `__dict__` (it carries `SHADOWS`)."""
    return isinstance(value, types.FunctionType) and isinstance(getattr(value, SHADOWS, None), list)


def shadowed(value: Any, missing: Any = None) -> Any:
    """What `value` stands for in an instance's `__dict__` as the instance's code set it: `value` itself, or, for a
    tracer's wrapper (or a chain of them), what it shadows; `missing` when the instance had nothing there."""
    for _ in range(_UNWRAP_LIMIT):
        if not is_shadowing(value):
            return value
        shadows = getattr(value, SHADOWS)
        if not shadows:
            return missing
        value = shadows[0]
    return value


def own_attribute(obj: Any, name: str) -> Any:
    """The object's own attribute `name` (in its `__dict__`) as its code set it, a tracer's wrapper seen through;
    `_MISSING` when it has none."""
    instance_dict = getattr(obj, "__dict__", None)
    if not isinstance(instance_dict, dict) or name not in instance_dict:
        return _MISSING
    return shadowed(instance_dict[name], _MISSING)


def lookup(obj: Any, name: str, delegates: Sequence[Any] = ()) -> Found | None:
    """The attribute `name` of a callback as a loop reading `getattr(obj, name)` gets it, and how; None when absent.

    Order: the instance's own attribute ('instance'), the class and its parents ('method'), then,
    when the object's `__getattr__` forwards the name, the delegates ('delegated'). Without
    `delegates` the object itself is asked, so a callback already linked to its delegate answers for it.
    """
    own = own_attribute(obj, name)
    if own is not _MISSING:
        return Found(own, "instance")
    shadowing = name in (getattr(obj, "__dict__", None) or {})  # a tracer's wrapper over nothing of the instance's
    value = _class_attribute(obj, name) if shadowing else _plain_attribute(obj, name)
    if value is not _MISSING:
        return Found(value, "method")
    if delegates:
        value = _delegated(obj, name, delegates)
    elif getattr(type(obj), "__getattr__", None) is not None:
        value = _asked(obj, name)
    return None if value is _MISSING else Found(value, "delegated")


def call_owner(cls: type) -> type | None:
    """The class in `cls`'s MRO that defines the `__call__` its instances use; None when they are not callable."""
    return next((klass for klass in cls.__mro__ if "__call__" in klass.__dict__), None)


def overrides_call(cb: Any, base: type) -> bool:
    """True when `base` dispatches events through its `__call__` and the callback's class replaces it."""
    base_owner = call_owner(base)
    return base_owner is not None and call_owner(type(cb)) is not base_owner


def has_handler(cb: Any, name: str, *, delegates: Sequence[Any] = (), call_base: type | None = None) -> bool:
    """True when the loop's call of `cb` for event `name` reaches a handler (own, inherited, delegated or `__call__`)."""
    if call_base is not None and overrides_call(cb, call_base):
        return True
    return lookup(cb, name, delegates) is not None


def handler_names(cb: Any, base_classes: Iterable[type] = ()) -> set[str]:
    """Names of the callback's own event-like handlers (`before_*`/`after_*`): on the instance or its classes."""
    names = {n for n in list(getattr(cb, "__dict__", {})) if is_event_like(n) and callable(own_attribute(cb, n))}
    generic = _generic_classes(tuple(base_classes))
    for klass in type(cb).__mro__:
        if klass not in generic:
            names |= {n for n, v in klass.__dict__.items() if is_event_like(n) and _is_callable_attr(v)}
    return names


def _is_callable_attr(value: Any) -> bool:
    """True for functions, methods and other callables stored on a class (not properties, not classes)."""
    return isinstance(value, (staticmethod, classmethod)) or (callable(value) and not isinstance(value, type))


# -- what a handler is: the user's function, its source, its doc --------------------------------------


def target_function(handler: Any) -> Any:
    """The user-written function behind a handler: unwraps bound methods, partials, static/class methods and decorators.

    For `partial(helper, f)` (as fastai's `before_batch_cb(f)` builds) whose helper has no docstring,
    the wrapped `f` is the meaningful target.
    """
    obj = handler
    for _ in range(_UNWRAP_LIMIT):
        if isinstance(obj, (types.MethodType, staticmethod, classmethod)):
            obj = obj.__func__
        elif isinstance(obj, functools.partial):
            inner = [a for a in obj.args if callable(a) and not isinstance(a, type)]
            obj = obj.func if own_doc(obj.func) or not inner else inner[0]
        elif _has_wrapped(obj):
            obj = obj.__wrapped__
        else:
            break
    return obj


def _has_wrapped(obj: Any) -> bool:
    """True when `obj` is a decorator's wrapper (`functools.wraps` sets `__wrapped__`)."""
    try:
        return hasattr(obj, "__wrapped__")
    except Exception:  # objects with an odd __getattr__
        return False


def source_ref(obj: Any) -> SourceRef | None:
    """File and first line of a function's code (or of a callable object's `__call__`); None for builtins."""
    code = getattr(obj, "__code__", None)
    if code is None and callable(obj) and not isinstance(obj, type):
        code = getattr(target_function(getattr(type(obj), "__call__", None)), "__code__", None)
    if code is None:
        return None
    return SourceRef(code.co_filename, code.co_firstlineno)


@functools.lru_cache(maxsize=64)
def _generic_classes(base_classes: tuple[type, ...]) -> frozenset[type]:
    """The framework's base classes and everything above them: their docs never describe a callback."""
    return frozenset({object, *(k for base in base_classes for k in base.__mro__)})


@functools.lru_cache(maxsize=64)
def generic_docs(base_classes: tuple[type, ...] = ()) -> frozenset[str]:
    """Docstrings that say nothing about a handler: Python's own (object, partial, methods...) and the base classes'."""
    docs = [o.__doc__ for o in _GENERIC_OBJECTS]
    for klass in _generic_classes(base_classes) - {object}:
        docs.append(klass.__dict__.get("__doc__"))
        docs += [getattr(v, "__doc__", None) for v in klass.__dict__.values() if callable(v)]
    return frozenset(inspect.cleandoc(d) for d in docs if isinstance(d, str) and d)


def _clean(doc: Any, base_classes: tuple[type, ...]) -> str:
    """A docstring tidied for display, or '' when it is missing or generic."""
    if not isinstance(doc, str) or not doc:
        return ""
    doc = inspect.cleandoc(doc)
    return "" if doc in generic_docs(base_classes) else doc


def own_doc(obj: Any, base_classes: Iterable[type] = ()) -> str:
    """The object's own docstring (for a class: not inherited), or '' when missing or generic."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return _clean(doc, tuple(base_classes))


def class_doc(cls: type, base_classes: Iterable[type] = ()) -> str:
    """The callback class's docstring, inherited from a parent callback if needed, never a base class's."""
    bases = tuple(base_classes)
    generic = _generic_classes(bases)
    for klass in cls.__mro__:
        doc = "" if klass in generic else own_doc(klass, bases)
        if doc:
            return doc
    return ""


def inherited_doc(cls: type, name: str, base_classes: Iterable[type] = ()) -> str:
    """The first docstring of a handler named `name` along `cls`'s MRO (parents' overridden ones included), or ''."""
    bases = tuple(base_classes)
    generic = _generic_classes(bases)
    for klass in cls.__mro__:
        if klass not in generic and name in klass.__dict__:
            doc = own_doc(target_function(klass.__dict__[name]), bases)
            if doc:
                return doc
    return ""


def _handler_doc(found: Found, name: str, info: CallbackInfo, bases: tuple[type, ...]) -> tuple[str, DocSource]:
    """Docstring of a found handler and where it came from: the handler's own, inherited, the class's, or none."""
    handler = found.handler
    own = own_doc(target_function(handler), bases)
    if own:
        return own, "handler"
    bound = isinstance(handler, types.MethodType) and not isinstance(handler.__func__, functools.partial)
    if bound and found.via in ("method", "delegated"):
        owner = handler.__self__ if isinstance(handler.__self__, type) else type(handler.__self__)
        inherited = inherited_doc(owner, name, bases)
        if inherited:
            return inherited, "inherited"
    if info.doc and found.via != "delegated":  # the callback's class doc does not describe a learner's or model's method
        return info.doc, "class"
    return _NO_DOC, "none"


def describe(found: Found, name: str, info: CallbackInfo, base_classes: Iterable[type] = ()) -> Handler:
    """The `Handler` for a found handler of event `name`: its doc, where the doc came from, its source, how it is
    reached, and, without a docstring of its own, its first line of code."""
    doc, doc_source = _handler_doc(found, name, info, tuple(base_classes))
    function = target_function(found.handler)
    code = first_code_line(function) if doc_source in ("class", "none") else ""
    return Handler(info, doc, doc_source, source_ref(function), via=found.via, code=code)


CODE_LIMIT = 100  # characters of a handler's first line of code shown


def first_code_line(function: Any) -> str:
    """The first line of a function's body that is code (not its docstring), stripped and cut to CODE_LIMIT; '' where
    no source is kept (a builtin, a lambda in a REPL, a partial)."""
    code = getattr(function, "__code__", None)
    return _first_line(code) if code is not None else ""


@functools.lru_cache(maxsize=512)
def _first_line(code: types.CodeType) -> str:
    try:
        lines, _ = inspect.getsourcelines(code)
    except (OSError, TypeError, IndentationError):
        return ""
    source = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return ""
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    if not body:
        return ""
    segment = ast.get_source_segment(source, body[0]) or ""  # (a one-line def's body too)
    first = segment.splitlines()[0].strip() if segment else ""
    return first if len(first) <= CODE_LIMIT else first[:CODE_LIMIT - 1] + "…"


def _call_handler(cb: Any, info: CallbackInfo, bases: tuple[type, ...]) -> Handler:
    """The `Handler` for a callback whose class replaces the dispatching `__call__`: it receives every event."""
    call = target_function(type(cb).__call__)
    own = own_doc(call, bases)
    if own:
        return Handler(info, own, "handler", source_ref(call), via="call")
    code = first_code_line(call)
    if info.doc:
        return Handler(info, info.doc, "class", source_ref(call), via="call", code=code)
    return Handler(info, _NO_DOC, "none", source_ref(call), via="call", code=code)


def handler_for(cb: Any, name: str, info: CallbackInfo | None = None, *, base_classes: Iterable[type] = (),
                delegates: Sequence[Any] = (), call_base: type | None = None) -> Handler | None:
    """The callback's `Handler` for event `name` (not yet judged by run flags), or None when the loop reaches none."""
    bases = tuple(base_classes)
    info = info or callback_info(cb, bases)
    if call_base is not None and overrides_call(cb, call_base):
        return _call_handler(cb, info, bases)
    found = lookup(cb, name, delegates)
    return None if found is None else describe(found, name, info, bases)


# -- the callback as a whole --------------------------------------------------------------------


def _flag(cb: Any, name: str) -> bool:
    """A run flag (`run`, `run_train`, `run_valid`) as a bool; True when absent, or a method that happens to share the name."""
    value = getattr(cb, name, True)
    return True if callable(value) else bool(value)


def _default_order(cb: Any) -> float:
    """The callback's `order` attribute, 0 when it has none."""
    return getattr(cb, "order", 0)


def callback_info(cb: Any, base_classes: Iterable[type] = (), order: Callable[[Any], float] | None = None) -> CallbackInfo:
    """The static facts about one callback object; `base_classes` are the framework's, whose docs are not the callback's."""
    cls = type(cb)
    bases = tuple(base_classes)
    return CallbackInfo(
        name=str(getattr(cb, "name", cls.__name__)),
        cls=cls.__name__,
        module=cls.__module__,
        order=(order or _default_order)(cb),
        run=_flag(cb, "run"),
        run_train=_flag(cb, "run_train"),
        run_valid=_flag(cb, "run_valid"),
        doc=class_doc(cls, bases),
        overrides_call=any(overrides_call(cb, base) for base in bases),
    )
