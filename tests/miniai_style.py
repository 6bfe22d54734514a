"""A miniai-style Learner, written for the tests in the style of the fastai course's miniai (not copied):
events dispatched by name through `Learner.callback`, `with_cbs` giving before/after/cleanup per phase,
Cancel*Exceptions, callbacks sorted by `order`, handlers taking the learner."""
from __future__ import annotations

from operator import attrgetter

import torch
from torch import nn


class CancelFitException(Exception):
    pass


class CancelBatchException(Exception):
    pass


class CancelEpochException(Exception):
    pass


class Callback:
    order = 0


def run_cbs(cbs, method_nm, learn=None):
    for cb in sorted(cbs, key=attrgetter("order")):
        method = getattr(cb, method_nm, None)
        if method is not None:
            method(learn)


class with_cbs:
    def __init__(self, nm):
        self.nm = nm

    def __call__(self, f):
        def _f(o, *args, **kwargs):
            try:
                o.callback(f"before_{self.nm}")
                f(o, *args, **kwargs)
                o.callback(f"after_{self.nm}")
            except globals()[f"Cancel{self.nm.title()}Exception"]:
                pass
            finally:
                o.callback(f"cleanup_{self.nm}")
        return _f


class Learner:
    def __init__(self, model, train_dl, valid_dl, loss_func, lr=0.1, cbs=(), opt_func=torch.optim.SGD):
        self.model, self.train_dl, self.valid_dl, self.loss_func = model, train_dl, valid_dl, loss_func
        self.lr, self.cbs, self.opt_func = lr, list(cbs), opt_func

    @with_cbs("batch")
    def _one_batch(self):
        self.predict()
        self.callback("after_predict")
        self.get_loss()
        self.callback("after_loss")
        if self.training:
            self.backward()
            self.callback("after_backward")
            self.step()
            self.callback("after_step")
            self.zero_grad()

    @with_cbs("epoch")
    def _one_epoch(self):
        for self.iter, self.batch in enumerate(self.dl):
            self._one_batch()

    def one_epoch(self, training):
        self.model.train(training)
        self.dl = self.train_dl if training else self.valid_dl
        self._one_epoch()

    @with_cbs("fit")
    def _fit(self, train, valid):
        for self.epoch in self.epochs:
            if train:
                self.one_epoch(True)
            if valid:
                torch.no_grad()(self.one_epoch)(False)

    def fit(self, n_epochs=1, train=True, valid=True, cbs=None):
        cbs = list(cbs or [])
        self.cbs += cbs
        try:
            self.n_epochs, self.epochs = n_epochs, range(n_epochs)
            self.opt = self.opt_func(self.model.parameters(), self.lr)
            self._fit(train, valid)
        finally:
            for cb in cbs:
                self.cbs.remove(cb)

    def __getattr__(self, name):
        if name in ("predict", "get_loss", "backward", "step", "zero_grad"):
            return lambda: self.callback(name)
        raise AttributeError(name)

    def callback(self, method_nm):
        run_cbs(self.cbs, method_nm, self)

    @property
    def training(self):
        return self.model.training


class TrainCB(Callback):
    "Does the training steps: predict, loss, backward, step, zero_grad"

    def predict(self, learn):
        "Run the model on the inputs"
        learn.preds = learn.model(learn.batch[0])

    def get_loss(self, learn):
        "Compare predictions and targets"
        learn.loss = learn.loss_func(learn.preds, learn.batch[1])

    def backward(self, learn):
        learn.loss.backward()

    def step(self, learn):
        learn.opt.step()

    def zero_grad(self, learn):
        learn.opt.zero_grad()


class MetricsCB(Callback):
    "Tracks the mean loss of each epoch"
    order = 10

    def before_epoch(self, learn):
        self.losses = []

    def after_batch(self, learn):
        "Remember this batch's loss"
        self.losses.append(learn.loss.item())


class StopEarlyCB(Callback):
    "Stops the fit after a few training batches"
    order = 20

    def __init__(self, max_batches=3):
        self.max_batches, self.seen = max_batches, 0

    def after_batch(self, learn):
        if learn.training:
            self.seen += 1
            if self.seen >= self.max_batches:
                raise CancelFitException()


class TrainLearner(Learner):
    "A learner that does the training steps itself (they are then work, not events)"

    def predict(self):
        self.preds = self.model(self.batch[0])

    def get_loss(self):
        self.loss = self.loss_func(self.preds, self.batch[1])

    def backward(self):
        self.loss.backward()

    def step(self):
        self.opt.step()

    def zero_grad(self):
        self.opt.zero_grad()


def synthetic(n_batches=4, bs=8, seed=0):
    """A tiny regression problem: (data loader for training, for validation, model, loss)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * bs, 1, generator=g)
    y = 2 * x + 3
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]
    return batches, batches[:2], nn.Linear(1, 1), nn.functional.mse_loss
