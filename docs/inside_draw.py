"""docs/inside-draw.md's example: a DataBlock whose item transform stands for decoding a file, two workers,
a fit traced with data=True (`python docs/inside_draw.py` prints what the page shows)."""
import time

import loopviz  # noqa: F401  (learn.trace)
from fastai.callback.all import *  # noqa: F403  (learn.no_bar)
from fastai.data.all import *  # noqa: F403
from fastai.learner import Learner
from fastai.losses import MSELossFlat


class Decode(Transform):
    "Stands for decoding a file: 2 ms for each tensor of an item (its input and its target)"
    order = 6
    def encodes(self, x: Tensor): time.sleep(0.002); return x


class Flip(Transform):
    "Flips each item, in training only"
    split_idx, order = 0, 7
    def encodes(self, x: Tensor): return x.flip(0)


class Scale(Transform):
    "Scales the batch"
    def encodes(self, x: Tensor): return x / 100


def as_row(i): return tensor([float(i)] * 16)
def target(i): return tensor(float(i % 2))
def items(_): return list(range(512))


def traced_fit():
    """Two epochs of a linear model on 512 items, batches of 32, two workers, traced with data=True: the learner
    and its trace."""
    block = DataBlock(blocks=(TransformBlock(type_tfms=[as_row]), TransformBlock()), get_items=items, get_y=target,
                      splitter=RandomSplitter(seed=0), item_tfms=[Decode(), Flip()], batch_tfms=[Scale()])
    learn = Learner(block.dataloaders(None, bs=32, num_workers=2), nn.Linear(16, 1), loss_func=MSELossFlat())
    with learn.no_bar(), learn.no_logging(), learn.trace(data=True) as t:
        learn.fit(2)
    return learn, t


if __name__ == "__main__":  # worker processes may be started by spawn: they import this file
    learn, t = traced_fit()
    summary = t.data_summary()
    print(summary[summary["loader"] == "train"].round(3).to_string())
    print(t.loader_timing()[0])
    print(t.diagnose())
    t.to_html("fit.html"); t.to_chrome("fit.perfetto.json")
    learn.show_training_loop(trace=t, verbose=True, fmt="graphviz").save("loop.svg")  # draw, its loop filled by time
