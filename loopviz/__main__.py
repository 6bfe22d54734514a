"""`python -m loopviz`: show the training loop of a built-in synthetic fastai learner (no download)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from loopviz.annotate import annotate
from loopviz.diagram import LoopDiagram
from loopviz.errors import GraphvizNotFound, LoopvizError
from loopviz.model import LoopSpec
from loopviz.processors import focus, hide_empty
from loopviz.renderers.mermaid import render_mermaid
from loopviz.renderers.text import render_text
from loopviz.trace.trace import Trace
from loopviz.view import show_loop

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="loopviz",
        description="Show what a fastai Learner's loop does: every event, the callbacks run there, in order.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="add event descriptions, work between events and callback docs")
    parser.add_argument("--loop", default="fit", help="which loop: fit, fit_one_cycle, fine_tune, validate, get_preds, lr_find (default: fit)")
    parser.add_argument(
        "--cbs", default="", metavar="NAMES",
        help="comma-separated fastai callback classes to preview, e.g. GradientClip,SaveModelCallback",
    )
    parser.add_argument("--width", type=int, default=100, help="wrap verbose text at this width (default: 100)")
    parser.add_argument("--fmt", default="text", choices=["text", "rich", "mermaid", "graphviz"],
                        help="the view (default: text); graphviz prints DOT unless --out is given")
    parser.add_argument("--out", metavar="PATH", help="write the view to PATH instead: a diagram by extension "
                        "(.svg .png .pdf .dot), text or Mermaid as UTF-8")
    parser.add_argument("--hide-empty", action="store_true", help="leave out events where no callback runs")
    parser.add_argument("--focus", metavar="CALLBACK", help="show only this callback (class or fastai name)")
    parser.add_argument("--trace", type=int, metavar="EPOCHS", default=0,
                        help="fit the learner for EPOCHS epochs under a trace, print where the time went, and "
                             "annotate the view with the measured times")
    return parser


def _callbacks(names: str) -> list[type]:
    """fastai callback classes from their comma-separated names; a clear error for unknown ones."""
    import fastai.callback.all as fastai_callbacks
    from fastai.callback.core import Callback

    classes = []
    for name in filter(None, (n.strip() for n in names.split(","))):
        cls = getattr(fastai_callbacks, name, None)
        if not (isinstance(cls, type) and issubclass(cls, Callback)):
            known = sorted(n for n, v in vars(fastai_callbacks).items() if isinstance(v, type) and issubclass(v, Callback))
            raise SystemExit(f"loopviz: --cbs: {name!r} is not a fastai callback class. Known: {', '.join(known)}")
        classes.append(cls)
    return classes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    import fastai.callback.all  # noqa: F401  (as in a notebook: ProgressCallback joins the defaults)
    from fastai.test_utils import synth_learner

    import loopviz  # noqa: F401  (patches Learner.show_training_loop)

    cbs = _callbacks(args.cbs)
    learn = synth_learner()
    try:
        spec = learn.loop_spec(loop=args.loop, cbs=cbs)
        if args.trace:
            spec = annotate(spec, _traced_fit(learn, args.trace, cbs))
        return _emit(spec, args)
    except (LoopvizError, GraphvizNotFound) as e:
        print(f"loopviz: {e}", file=sys.stderr)
        return 2


def _traced_fit(learn: object, epochs: int, cbs: list[type]) -> Trace:
    """Fit for `epochs` epochs under a trace (no progress bar), print the trace, and return it."""
    with learn.no_bar(), learn.no_logging(), learn.trace() as trace:  # type: ignore[attr-defined]
        learn.fit(epochs, cbs=[cb() for cb in cbs])  # type: ignore[attr-defined]
    print(trace)
    print()
    return trace


def _emit(spec: LoopSpec, args: argparse.Namespace) -> int:
    """Print the chosen view, or write it to --out."""
    if args.focus:
        spec = focus(spec, args.focus)
    if args.hide_empty:
        spec = hide_empty(spec)
    if args.fmt == "graphviz" or (args.out and Path(args.out).suffix.lower() in (".svg", ".png", ".pdf", ".dot", ".gv")):
        diagram = LoopDiagram(spec, verbose=args.verbose)
        if not args.out:
            print(diagram.source)
            return 0
        print(f"wrote {diagram.save(args.out)}")
        return 0
    if args.out:
        text = render_mermaid(spec, args.verbose) if args.fmt == "mermaid" else render_text(spec, args.verbose, args.width)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    show_loop(spec, verbose=args.verbose, fmt=args.fmt, width=args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
