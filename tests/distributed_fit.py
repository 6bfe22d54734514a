"""Run by torchrun in tests/test_distributed.py: one traced fastai fit per rank, saved as trace.rank{r}.json.

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_fit.py OUT_DIR [ddp-cpu|distrib_ctx]

ddp-cpu: gloo on CPU, the model wrapped in DistributedDataParallel by hand and each rank drawing its
own data (fastai's distrib_ctx cannot run on CPU: its DistributedDL broadcasts through CUDA tensors).
Rank 1 is made slower before backward, so rank 0's gradient all-reduce visibly waits for it.
distrib_ctx: fastai's own `learn.distrib_ctx()`, for machines with one GPU per rank.
"""
from __future__ import annotations

import sys
import time
import warnings

import torch
import torch.distributed as dist

warnings.filterwarnings("ignore")


def main(out: str, mode: str) -> None:
    import fastai.callback.all  # noqa: F401
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from fastai.test_utils import synth_learner

    import loopviz  # noqa: F401

    class SlowRank(Callback):
        "Rank 1 sleeps before backward: the other ranks wait for it in the gradient all-reduce"

        def before_backward(self):
            if dist.get_rank() == 1:
                time.sleep(0.06)

    torch.set_num_threads(1)
    if mode == "ddp-cpu":
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        torch.manual_seed(rank)  # each rank its own shard of (synthetic) data
        learn = synth_learner(n_trn=4, n_val=1, cbs=[SlowRank()])
        learn.model = torch.nn.parallel.DistributedDataParallel(learn.model)
        if rank > 0:
            learn.remove_cb(ProgressCallback)  # as fastai's to_distributed does on rank > 0
        # a first fit untraced: the first collectives set gloo up, which stalls one rank or the other by about 200 ms,
        # and the tests compare what each rank waits for the other in the traced fit's backwards
        with learn.no_logging(), learn.no_bar():
            learn.fit(1)
        with learn.no_logging(), learn.trace() as t:
            learn.fit(1)
        t.save(f"{out}/trace.rank{rank}.json")
        dist.barrier()
        dist.destroy_process_group()
    else:
        from fastai.distributed import rank_distrib

        learn = synth_learner(n_trn=4, n_val=1, cuda=True, cbs=[SlowRank()])
        with learn.distrib_ctx():
            with learn.no_logging(), learn.trace() as t:
                learn.fit(1)
        t.save(f"{out}/trace.rank{rank_distrib()}.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "ddp-cpu")
