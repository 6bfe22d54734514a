"""IPython magics: `%load_ext loopviz`, then `%%loopviz` traces what a cell runs (`%loopviz learn.fit(1)` what a
line runs) and shows the trace, as pyinstrument's `%%pyinstrument` does for a profile.

The learner or trainer traced is the one the code names (`learn` in `learn.fit(1)`; of a Lightning trainer and its
module, the trainer), or the one `-t NAME` names. The trace is kept in the namespace as `_loopviz` (`-o NAME` for
another name), also when the code raises.
"""
from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class

from loopviz.adapters import adapter_for
from loopviz.errors import LoopvizError

__all__ = ["LoopvizMagics", "load_ipython_extension", "targets_named"]

_FLAGS = ("data", "ranges", "changes", "waits", "live")  # the trace's options a magic passes on (`--data`...)
USAGE = ("%%loopviz [-t NAME] [-o NAME] [-q] [--data] [--ranges] [--changes] [--waits] [--live]  (a cell), or "
         "%loopviz [options] STATEMENT  (a line)")


def _names(code: str) -> list[str]:
    """The names `code` reads, in order of first use (a syntax error is the caller's to report)."""
    tree = ast.parse(code)
    found = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)]
    return list(dict.fromkeys(found))


def _is_lightning_module(obj: Any) -> bool:
    return any(base.__name__ == "LightningModule" and base.__module__.startswith(("lightning", "pytorch_lightning"))
               for base in type(obj).__mro__)


def targets_named(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """The objects loopviz can trace that `code` names, by name (a Lightning module left out where its trainer is
    named too: tracing the trainer records the module's hooks)."""
    found = {name: namespace[name] for name in _names(code) if name in namespace and adapter_for(namespace[name])}
    unique: dict[str, Any] = {}
    for name, obj in found.items():
        if all(obj is not kept for kept in unique.values()):
            unique[name] = obj
    trainers = [obj for obj in unique.values() if type(obj).__name__ == "Trainer" and not _is_lightning_module(obj)]
    if trainers and len(unique) > 1:
        unique = {name: obj for name, obj in unique.items() if not _is_lightning_module(obj)}
    return unique


@magics_class
class LoopvizMagics(Magics):
    """`%%loopviz` and `%loopviz`: trace what a cell (or a line) runs and show the trace."""

    @line_cell_magic
    def loopviz(self, line: str, cell: str | None = None) -> Any:
        """Trace what the cell (or the statement after the options) runs and show the trace; options: -t NAME (the
        learner or trainer to trace: by default the one the code names), -o NAME (keep the trace under this name:
        `_loopviz` by default), -q (keep it without showing it), --data, --ranges, --changes, --waits, --live (the
        trace's options of the same names)."""
        opts, rest = self.parse_options(line, "t:o:q", "target=", "out=", "quiet", *_FLAGS, posix=False, strict=False)
        code = cell if cell is not None else rest
        if cell is not None and rest.strip():
            raise UsageError(f"%%loopviz takes options only on its first line, not {rest.strip()!r}. {USAGE}")
        if not code.strip():
            raise UsageError(f"%loopviz needs a statement to trace, e.g. %loopviz learn.fit(1). {USAGE}")
        namespace = self.shell.user_ns
        target = self._target(opts.get("t") or opts.get("target"), code, namespace)
        options = {flag: True for flag in _FLAGS if flag in opts}
        try:
            trace = _tracing(target, options)
        except LoopvizError as error:
            raise UsageError(f"%loopviz: {error}") from None
        out = opts.get("o") or opts.get("out") or "_loopviz"
        if not str(out).isidentifier():
            raise UsageError(f"-o {out!r}: the trace is kept under a Python name, such as -o t.")
        try:
            trace.start()
        except LoopvizError as error:  # an option this target cannot record (--waits without CUDA...)
            raise UsageError(f"%loopviz: {error}") from None
        namespace[out] = trace
        try:
            error = self._run(code)
        finally:
            trace.stop()
        if error is not None:  # raised on, so that a notebook run stops here as it would without the magic
            print(f"loopviz: the trace of the run up to the error is in {out}.")
            raise error
        return None if ("q" in opts or "quiet" in opts) else trace

    def _target(self, name: str | None, code: str, namespace: dict[str, Any]) -> Any:
        """The learner or trainer to trace: the one `-t` names, else the one the code names."""
        if name:
            try:
                return eval(name, namespace)  # noqa: S307  (the user's own expression, in their own namespace)
            except Exception as error:
                raise UsageError(f"-t {name}: {type(error).__name__}: {error}") from None
        try:
            found = targets_named(self.shell.transform_cell(code), namespace)
        except SyntaxError as error:
            raise UsageError(f"%loopviz: the code is not valid Python ({error.msg}, line {error.lineno}).") from None
        if len(found) == 1:
            return next(iter(found.values()))
        if not found:
            raise UsageError("%loopviz: the code names no learner or trainer loopviz can trace (a fastai Learner, a "
                             "Hugging Face Trainer, a Lightning Trainer...); name one with -t, e.g. %%loopviz -t learn")
        raise UsageError(f"%loopviz: the code names several learners or trainers ({', '.join(found)}); choose one "
                         f"with -t, e.g. %%loopviz -t {next(iter(found))}")

    def _run(self, code: str) -> Exception | None:
        """Run `code` in the user's namespace as a cell would; the exception it raised, if any, made to show its
        traceback from the cell's own frame (IPython's `_render_traceback_`), not from the magic's."""
        shell = self.shell
        try:
            source = shell.transform_cell(code)
            filename = shell.compile.cache(source)  # (kept, so that a traceback shows the cell's lines)
            tree = shell.transform_ast(shell.compile.ast_parse(source, filename))
            exec(shell.compile(tree, filename, "exec"), shell.user_ns)  # noqa: S102  (the user's own cell)
        except Exception as error:
            frames = error.__traceback__.tb_next if error.__traceback__ is not None else None
            shown = shell.InteractiveTB.structured_traceback(type(error), error, frames)
            error._render_traceback_ = lambda: shown  # type: ignore[attr-defined]
            return error
        return None


def _tracing(target: Any, options: dict[str, bool]) -> Any:
    """`loopviz.tracing(target, **options)`: the trace, not started."""
    from loopviz.targets import tracing

    return tracing(target, **options)


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext loopviz`: the `%%loopviz` and `%loopviz` magics."""
    ipython.register_magics(LoopvizMagics)
