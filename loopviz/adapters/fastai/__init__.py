"""The fastai adapter: builds loop specs from a `Learner` (`spec.py`), traces its fits (`tracer.py`) and patches
`Learner` (`patch.py`, applied by `hook.py` when fastai is imported). Importing this package imports no fastai."""
