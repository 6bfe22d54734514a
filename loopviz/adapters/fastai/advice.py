"""What a diagnosis of a fastai trace says in fastai's words (`Trace.finish(advice=...)`, kept in the trace's meta):
the work names it weighs, the events fired once a batch, fastai's own callbacks, and each fix as fastai code."""
from __future__ import annotations

__all__ = ["ADVICE"]

ADVICE = {
    "data_work": "draw",
    "compute_work": ["forward", "loss", "backward", "step", "zero_grad"],
    "step_work": "step",
    "forward_backward_work": ["forward", "loss", "backward"],
    "per_batch_events": ["before_batch", "after_pred", "after_loss", "before_backward", "after_backward",
                         "before_step", "after_step", "after_batch"],
    "own_modules": ["fastai."],
    "fixes": {
        "loader": "dls = dblock.dataloaders(source, num_workers={workers})  # or DataLoaders.from_dsets(..., "
                  "num_workers={workers})",
        "loader_persistent": "dls = dblock.dataloaders(source, num_workers={workers}, persistent_workers=True)",
        "stall": "# fastai's DataLoader starts its workers again every epoch: torch's keep them\n"
                 "from torch.utils.data import DataLoader\n"
                 "dls = DataLoaders(DataLoader(train_ds, batch_size=64, shuffle=True, num_workers={workers}, "
                 "persistent_workers=True),\n"
                 "                  DataLoader(valid_ds, batch_size=64, num_workers={workers}, persistent_workers=True))\n"
                 "# when done with the learner: for dl in dls.loaders: dl._iterator = None  # ends the workers now "
                 "(left to the garbage collector with the learner, each waits out torch's 5 s timeout)",
        "every_n": "if self.train_iter % 10: return  # first line of {callback}.{event}: its work every 10th batch",
        "rarer": "if self.train_iter % 100: return  # {callback}.{event} already skips most batches: its heavy calls "
                 "less often still (or move them to after_epoch), or make them cheaper",
        "remove": "make {callback}.{event} cheaper, or leave it out of this fit: learn.fit(..., cbs=[...]) without it",
        "validation": "dls = dblock.dataloaders(source, val_bs=256)  # larger validation batches\n"
                      "splitter=RandomSplitter(valid_pct=0.1)  # or a smaller validation set",
        "batch_size": "dls = dblock.dataloaders(source, bs=256)  # larger batches: fastai's cost per event is paid "
                      "per batch",
        "loader_batch": "dls = dblock.dataloaders(source, bs=256)  # larger batches: part of the loader's cost is paid "
                        "per batch (learn.trace(data=True) shows its stages)",
        "precision": "learn = learn.to_bf16()  # mixed precision (learn.to_fp16() on GPUs without bfloat16)",
        "step": "from fastai.optimizer import OptimWrapper\n"
                "learn = Learner(dls, model, opt_func=partial(OptimWrapper, opt=torch.optim.AdamW))  # torch's "
                "multi-tensor step",
    },
    "own_fixes": {
        "ProgressCallback": "learn.fit(...) inside `with learn.no_bar():`, or learn.remove_cb(ProgressCallback)",
        "SaveModelCallback": "SaveModelCallback(every_epoch=False)  # the best model only, saved when it improves",
        "CSVLogger": "leave CSVLogger out of this fit, or read the losses from learn.recorder.values",
    },
}
