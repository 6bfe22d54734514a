"""`python -m loopviz`: the main job on the built-in synthetic learner."""
from __future__ import annotations

import subprocess
import sys

import pytest

from loopviz.__main__ import main


def test_main_prints_the_verbose_loop(capsys):
    assert main(["--verbose", "--cbs", "GradientClip,SaveModelCallback"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The fit loop of fastai")
    assert "GradientClip (order 11)" in out and "SaveModelCallback (order 61)" in out
    assert " ~ backward: learn.loss_grad.backward()" in out


def test_main_other_loop(capsys):
    assert main(["--loop", "get_preds"]) == 0
    assert "GatherPredsCallback" in capsys.readouterr().out


def test_bad_arguments_get_clear_messages(capsys):
    with pytest.raises(SystemExit, match="'Nope' is not a fastai callback class. Known: "):
        main(["--cbs", "Nope"])
    assert main(["--loop", "train"]) == 2
    assert "loop='train' is not a loop loopviz knows" in capsys.readouterr().err
    assert main(["--cbs", "ParamScheduler"]) == 2
    assert "Pass an instance instead" in capsys.readouterr().err


def test_module_runs_as_a_program():
    done = subprocess.run([sys.executable, "-m", "loopviz"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Start Create"
    assert " - after_batch    : [TrainEvalCallback, Recorder, ProgressCallback]" in done.stdout


def test_diagram_and_text_files(tmp_path, capsys):
    import xml.etree.ElementTree as ET
    import shutil

    assert main(["--fmt", "graphviz", "--out", str(tmp_path / "loop.dot")]) == 0
    assert (tmp_path / "loop.dot").read_text().startswith("digraph loop {")
    if shutil.which("dot"):
        assert main(["--out", str(tmp_path / "loop.svg"), "--hide-empty"]) == 0
        ET.parse(tmp_path / "loop.svg")
    assert main(["--fmt", "mermaid", "--out", str(tmp_path / "loop.mmd")]) == 0
    assert (tmp_path / "loop.mmd").read_text().startswith("flowchart TB")
    assert main(["--focus", "Recorder"]) == 0
    out = capsys.readouterr().out
    assert "TrainEvalCallback" not in out.split("wrote")[-1]


def test_focus_on_a_missing_callback_is_an_error(capsys):
    assert main(["--focus", "Nope"]) == 2
    assert "focus='Nope' matches no callback of this loop" in capsys.readouterr().err


def test_trace_fits_and_annotates(capsys):
    assert main(["--trace", "1", "--hide-empty"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Trace of fastai") and "Events and work" in out
    assert "measured: host clock" in out and " ms (" in out
