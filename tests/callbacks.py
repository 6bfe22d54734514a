"""Callbacks written for the tests, in the shapes users write them."""
from __future__ import annotations

from fastai.callback.core import Callback, CancelBatchException
from fastai.learner import before_batch_cb


def log_start(self) -> None:
    "Log that fitting starts (a handler passed as a keyword argument)"


@before_batch_cb
def flip_inputs(self, xb, yb):
    "Negate the inputs (built with fastai's before_batch_cb)"
    return tuple(-x for x in xb), yb


class TrainOnlyCallback(Callback):
    "Counts training batches; run_valid=False keeps it out of validation"
    run_valid = False
    order = 55

    def after_batch(self) -> None:
        "Count one more training batch"


class Undocumented(Callback):
    def before_fit(self) -> None:
        pass


class ChildOfTrainOnly(TrainOnlyCallback):
    def after_batch(self) -> None:
        pass


class DrawCallback(Callback):
    "Handles a custom event that only code calling learn('before_draw') fires"

    def __init__(self):
        self.draws = 0

    def before_draw(self) -> None:
        "Count a draw"
        self.draws += 1


class CancelBatchAt(Callback):
    "Raises CancelBatchException in the event given"

    def __init__(self, event: str):
        setattr(self, event, self._cancel)

    def _cancel(self) -> None:
        raise CancelBatchException()


class Tricky(Callback):
    'Scale [mixup] by 0.5 <b>bold</b> & "quotes" {braces} | pipe \\ backslash — ünïcode <script>alert(1)</script>'
    order = 30

    def before_batch(self) -> None:
        'Multiline doc\n\n  with [markup] and <tags>\n  second line'

    def after_batch(self) -> None:
        pass
