"""`python -m loopviz`: show the training loop of a built-in synthetic fastai learner (no download)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

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
    from loopviz.errors import LoopvizError

    cbs = _callbacks(args.cbs)
    learn = synth_learner()
    try:
        learn.show_training_loop(verbose=args.verbose, cbs=cbs, loop=args.loop, width=args.width)
    except LoopvizError as e:
        print(f"loopviz: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
