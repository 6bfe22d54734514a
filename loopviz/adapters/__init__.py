"""Adapters turn a framework's training loop into a `loopviz.model.LoopSpec`."""
