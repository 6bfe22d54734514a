"""Tracing: recording what a loop really did (`Recorder`), the result (`Trace`) and its clocks."""
