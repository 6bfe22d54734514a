"""What `learn.trace(data=True)` adds to a fastai loader's loop, in instructions per batch and per item.

Runs itself under callgrind with instrumentation off (`callgrind.py`); inside, for a DataBlock loader with two type
transforms, three item transforms and one batch transform (the shapes of a real image pipeline, on tiny tensors),
it counts one pass of N batches and one of 2N, untraced and with the learner traced with data=True, at a batch
size of 1 and of B. The N/2N difference removes every fixed cost (the pass's start and end); traced minus untraced
is what the timing adds per batch; the slope between the two batch sizes splits that into a cost per item (each
item's create_item and after_item calls, and each of their transforms) and a cost per batch (the batch's stages,
its move and batch transforms, its rows). The loader runs in the main process (num_workers=0): callgrind counts
one process, and a worker runs the same wrappers per item and per batch, plus one write of its rows per batch.

    .venv/bin/python benchmarks/instructions_data.py [--n 40] [--bs 16]

Needs valgrind (Debian: apt-get install valgrind).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from callgrind import counted, run_under_callgrind  # noqa: E402


def _loader(batches: int, bs: int) -> Any:
    import torch
    from fastai.data.all import DataBlock, Transform, TransformBlock, tensor

    class Flip(Transform):
        order = 2

        def encodes(self, x: torch.Tensor):
            return x.flip(0)

    class Shift(Transform):
        order = 3

        def encodes(self, x: torch.Tensor):
            return x + 1

    class Scale(Transform):
        order = 1

        def encodes(self, x: torch.Tensor):
            return x / 2

    block = DataBlock(blocks=(TransformBlock(type_tfms=[lambda i: tensor([float(i)] * 8)]), TransformBlock()),
                      get_items=lambda _: list(range(batches * bs)), get_y=lambda o: float(o % 2),
                      splitter=lambda items: (list(range(len(items))), []), item_tfms=[Flip(), Shift()],
                      batch_tfms=[Scale()])
    return block.dataloaders(None, bs=bs, num_workers=0, device="cpu", shuffle=False, drop_last=False)


def _measure(args: argparse.Namespace) -> None:
    from fastai.learner import Learner
    from torch import nn

    import loopviz  # noqa: F401  (patches Learner.trace)

    for bs in (1, args.bs):
        for n in (args.n, 2 * args.n):
            dls = _loader(n, bs)
            learn = Learner(dls, nn.Linear(8, 1), loss_func=nn.MSELoss())
            list(dls.train)  # warm: first-pass caches
            counted(f"plain-{bs}-{n}", lambda: [b for b in dls.train])
            with learn.trace(data=True):
                list(dls.train)
                counted(f"data-{bs}-{n}", lambda: [b for b in dls.train])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="batches of a pass (and 2N)")
    parser.add_argument("--bs", type=int, default=16, help="the larger batch size")
    parser.add_argument("--inside", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        _measure(args)
        return
    totals = run_under_callgrind(__file__, ["--n", str(args.n), "--bs", str(args.bs), "--inside", "1"])
    n = args.n

    def per_batch(kind: str, bs: int) -> float:
        return (totals[f"{kind}-{bs}-{2 * n}"] - totals[f"{kind}-{bs}-{n}"]) / n

    added = {bs: per_batch("data", bs) - per_batch("plain", bs) for bs in (1, args.bs)}
    plain = {bs: per_batch("plain", bs) for bs in (1, args.bs)}
    per_item = (added[args.bs] - added[1]) / (args.bs - 1)
    fixed = added[1] - per_item
    own_item = (plain[args.bs] - plain[1]) / (args.bs - 1)
    own_batch = plain[1] - own_item
    print(f"a pass of {n} and {2 * n} batches, batch sizes 1 and {args.bs} (instructions):")
    for bs in (1, args.bs):
        print(f"  bs={bs:<3} untraced {plain[bs]:>12,.0f} per batch, data=True adds {added[bs]:>10,.0f} "
              f"({100 * added[bs] / plain[bs]:.1f} %)")
    print(f"  added per item  {per_item:>10,.0f}  (the loader's own work per item: {own_item:,.0f})")
    print(f"  added per batch {fixed:>10,.0f}  (the loader's own work per batch: {own_batch:,.0f})")


if __name__ == "__main__":
    main()
