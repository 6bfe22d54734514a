"""Where the host waits for the GPU: synchronising operations seen through torch's sync debug mode, and how much
GPU work each one waited out.

CUDA work is queued: the host launches kernels and goes on while the GPU runs them. An operation that needs a
result on the host (`.item()`, `.cpu()`, formatting or printing a tensor, a copy from pageable memory) makes the
host wait until the GPU has run everything queued before it, and then the GPU idles while the host catches up.
torch reports each such operation when `torch.cuda.set_sync_debug_mode('warn')` is on, as a UserWarning issued
when the operation returns. The watcher turns that warning into a record of what was running (a callback call or
a piece of work between events, as the tracer tells it) and measures the wait against the device: a CUDA event
recorded as each call begins completes when the GPU has finished the work queued before the call, and a call
that synchronised cannot have returned from its synchronisation before then. So the wait of a call is the time
from the call's start until its event completed on the GPU (none when the GPU was already idle), at most the time
until the synchronisation returned. It overstates a call that did host work of its own before synchronising (that
work overlapped the GPU's), and leaves out waits for GPU work the call itself launched: both are small for a
callback that reads a loss or a metric.

Explicit `torch.cuda.synchronize()` calls are not reported by torch's sync debug mode, so not by the watcher.
Every CUDA function comes in through `Device`, so the logic is tested with a fake device on machines without a GPU.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Callable

from loopviz.errors import LoopvizError
from loopviz.trace import instrument

__all__ = ["SYNC_MESSAGE", "Device", "Wait", "WaitWatch", "cuda_device", "wait_watch"]

SYNC_MESSAGE = "called a synchronizing CUDA operation"  # the start of torch's warning in sync debug mode 'warn'
_WARN, _ERROR = 1, 2  # torch's sync debug modes (0 is 'default': silent)


@dataclass(frozen=True)
class Device:
    """The CUDA functions the watcher uses. `new_event()` returns an object with `record()`, `query()` (True once
    the GPU has reached it) and `elapsed_time(later) -> ms`, as `torch.cuda.Event(enable_timing=True)` does."""

    new_event: Callable[[], Any]
    synchronize: Callable[[], Any]
    get_mode: Callable[[], int]
    set_mode: Callable[[int], Any]
    now: Callable[[], int] = perf_counter_ns
    record: Callable[[Any], Any] = lambda event: event.record()  # records an event on the current stream


def cuda_device() -> Device:
    """The current CUDA device through torch."""
    import torch

    from loopviz.trace.clock import stream_recorder

    return Device(lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize,
                  torch.cuda.get_sync_debug_mode, torch.cuda.set_sync_debug_mode, record=stream_recorder(torch))


def wait_watch(dispatch: frozenset[str] = frozenset()) -> WaitWatch:
    """A watcher on the current CUDA device (`dispatch`: the loop's callback-dispatch files, left out of where a
    synchronisation was made); a clear error where torch sees none."""
    import torch

    if not torch.cuda.is_available():
        raise LoopvizError("waits=True finds where the host waits for a CUDA GPU, and torch sees none here; trace "
                           "without waits=True, or run the fit on a machine with a GPU.")
    return WaitWatch(cuda_device(), dispatch)


@dataclass(frozen=True)
class Wait:
    """What one call (or piece of work) that synchronised did: how many synchronising operations, the GPU work it
    waited out (ns), and where its first synchronisation was made ('file:line in function')."""

    syncs: int
    wait_ns: int
    site: str


class _Open:
    """A call or piece of work while it runs: when it began (host ns), its event on the GPU, the clock anchor in
    force then, and its synchronisations so far."""

    __slots__ = ("start", "event", "anchor", "syncs", "wait", "site")

    def __init__(self, start: int, event: Any, anchor: tuple[Any, int]):
        self.start, self.event, self.anchor = start, event, anchor
        self.syncs, self.wait, self.site = 0, 0, ""


class WaitWatch:
    """Times what each open call waited for the GPU, from torch's synchronisation warnings, while `start()`-ed.

    The tracer calls `open()` as a call (or a piece of work) begins and `close()` as it ends, innermost first; a
    synchronisation is charged to the innermost open one, in the thread that started the watch."""

    def __init__(self, device: Device, dispatch: frozenset[str] = frozenset()):
        self.device = device
        self.dispatch = dispatch  # files of the loop's callback dispatch, left out of where a sync was made
        self.stack: list[_Open] = []
        self.free: list[Any] = []  # events of closed calls, recorded again by later ones
        self.anchor: tuple[Any, int] = (None, 0)  # an event and the host time it ran at on an idle GPU
        self.thread = 0

    def start(self) -> None:
        """Anchor the GPU's clock to the host's and begin catching synchronisation warnings."""
        self.thread = threading.get_ident()
        self.device.synchronize()
        self.reanchor()
        _register(self)

    def stop(self) -> None:
        """Stop catching warnings (torch's sync debug mode and the warning hooks go back when no watch is left)."""
        self.stack.clear()
        _unregister(self)

    def reanchor(self) -> None:
        """A new anchor, taken while the GPU's queue is empty (at start, and just after a synchronisation): GPU
        times are measured from the latest one, so the two clocks cannot drift apart over a long fit."""
        event = self.device.new_event()
        self.device.record(event)
        self.anchor = (event, self.device.now())

    def open(self) -> None:
        """A call or piece of work begins: mark the GPU's queue at this point."""
        event = self.free.pop() if self.free else self.device.new_event()
        self.device.record(event)
        self.stack.append(_Open(self.device.now(), event, self.anchor))

    def close(self) -> Wait | None:
        """The innermost open call ends: what it waited, if it synchronised."""
        done = self.stack.pop()
        self.free.append(done.event)
        return Wait(done.syncs, done.wait, done.site) if done.syncs else None

    def synchronised(self, site: str) -> None:
        """A synchronising operation returned: charge it to the innermost open call; its first one waited out the
        GPU work queued before the call began."""
        if not self.stack:  # between traced calls and work: nothing to charge
            return
        current = self.stack[-1]
        current.syncs += 1
        if current.syncs == 1:
            current.site = site
            returned = self.device.now()
            current.wait = self._waited(current, returned)
            self.reanchor()

    def _waited(self, current: _Open, returned: int) -> int:
        """How long after the call began the GPU finished what was queued before it (0 if it already had), at
        most until the synchronisation returned."""
        event = current.event
        anchor_event, anchor_ns = current.anchor
        if anchor_event is None or not event.query():  # synchronised another stream: the queue was not drained
            return 0
        done = anchor_ns + round(anchor_event.elapsed_time(event) * 1e6)
        return max(0, min(done, returned) - current.start)


# -- the warning hook, shared by every watch ------------------------------------------------------

_WATCHES: list[WaitWatch] = []  # changed under the instrumentation kernel's lock
# while any watch runs: the sync mode and warning filter found at the first start, and the kernel's patches
_SAVED: dict[str, Any] = {}
_WARNINGS = os.path.dirname(warnings.__file__) + os.sep + "warnings.py"


def _register(watch: WaitWatch) -> None:
    with instrument.guarded():
        if not _WATCHES:
            _install(watch.device)
        _WATCHES.append(watch)


def _unregister(watch: WaitWatch) -> None:
    with instrument.guarded():
        if watch in _WATCHES:
            _WATCHES.remove(watch)
            if not _WATCHES:
                _uninstall()


def _install(device: Device) -> None:
    """torch's sync debug mode to 'warn' (unless the user chose 'error': synchronisations raise, as they would
    untraced), a filter that shows every sync warning, and `warnings.showwarning` that catches them."""
    mode = device.get_mode()
    patches = instrument.PatchSet()
    if mode != _ERROR:
        patches.setting("torch.cuda sync debug mode", device.get_mode, device.set_mode, _WARN)
    warnings.filterwarnings("always", message=SYNC_MESSAGE, category=UserWarning)
    _SAVED.update(mode=mode, filter=warnings.filters[0], patches=patches)
    patches.install(warnings, "showwarning", _catcher)


def _uninstall() -> None:
    _SAVED["patches"].restore()
    if _SAVED["filter"] in warnings.filters:
        warnings.filters.remove(_SAVED["filter"])
        mutated = getattr(warnings, "_filters_mutated", None)  # resets the once-per-place registries, as filterwarnings does
        if mutated is not None:
            mutated()
    _SAVED.clear()


def _catcher(previous: Callable[..., Any]) -> Callable[..., Any]:
    """`warnings.showwarning` while a watch runs: `_showwarning`, passing other warnings on to `previous`."""
    _SAVED["showwarning"] = previous
    return _showwarning


def _showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """Catch torch's synchronisation warnings for the watch of this thread; pass every other warning on."""
    saved = _SAVED
    previous = saved.get("showwarning", warnings._showwarning_orig)  # type: ignore[attr-defined]
    if issubclass(category, UserWarning) and str(message).startswith(SYNC_MESSAGE):
        watch = _watch_of(threading.get_ident())
        if watch is not None:
            watch.synchronised(_site(watch.dispatch))
        if saved.get("mode") != _WARN:  # the user did not ask torch for these warnings: loopviz did
            return
    previous(message, category, filename, lineno, file, line)


def _watch_of(thread: int) -> WaitWatch | None:
    """The watch started in this thread with a call open (the latest started, if several)."""
    for watch in reversed(_WATCHES):
        if watch.thread == thread and watch.stack:
            return watch
    return None


def _site(skip: frozenset[str] = frozenset()) -> str:
    """Where the synchronising operation was asked for, innermost first: the frames outside torch, warnings, loopviz
    and the files in `skip` (the loop's callback dispatch), one per file for up to three files ('a.py:3 in f <- ...')."""
    torch_dir, here = _torch_dir(), os.path.dirname(os.path.dirname(__file__)) + os.sep  # loopviz/
    frame, found, files = sys._getframe(2), [], []
    while frame is not None and len(files) < _SITE_FILES:
        name = frame.f_code.co_filename
        if name.startswith(here):
            if found:  # back in loopviz's wrappers: the loop's own frames are not the site
                break
        elif name != _WARNINGS and name not in skip and not (torch_dir and name.startswith(torch_dir)):
            if name not in files:
                files.append(name)
                found.append(f"{_short(name)}:{frame.f_lineno} in {frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(found) or "unknown"


_SITE_FILES = 3


def _torch_dir() -> str:
    torch = sys.modules.get("torch")
    path = getattr(torch, "__file__", None)
    return os.path.dirname(path) + os.sep if path else ""


_ROOTS: dict[str, str] = {}  # a folder -> the folder its outermost package lies in


def _short(path: str) -> str:
    """A file's path from the folder its outermost package lies in ('package/callback/fp16.py'), else its name."""
    folder = os.path.dirname(path)
    root = _ROOTS.get(folder)
    if root is None:
        root = folder
        while os.path.exists(os.path.join(root, "__init__.py")):
            root = os.path.dirname(root)
        _ROOTS[folder] = root
    return os.path.relpath(path, root) if root else os.path.basename(path)
