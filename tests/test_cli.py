"""The `loopviz` command: show, trace, report, diff; exit codes and one-line errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET


from loopviz.cli import main

LEARNER_FILE = '''
from fastai.test_utils import synth_learner
from fastai.callback.all import GradientClip
learn = synth_learner(cbs=[GradientClip()])
'''


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_show_the_built_in_learner(capsys):
    code, out, _ = run(["show", "--verbose", "--cbs", "GradientClip", "--cbs", "fastai.callback.all:SaveModelCallback"], capsys)
    assert code == 0 and out.startswith("The fit loop of fastai")
    assert "GradientClip (order 11)" in out and "SaveModelCallback (order 61)" in out


def test_show_formats_and_files(tmp_path, capsys):
    assert run(["show", "-f", "mermaid", "-o", str(tmp_path / "loop.mmd")], capsys)[0] == 0
    assert (tmp_path / "loop.mmd").read_text().startswith("flowchart TB")
    code, out, _ = run(["show", "-f", "dot"], capsys)
    assert code == 0 and out.startswith("digraph loop {")
    code, out, _ = run(["show", "-f", "rich", "--focus", "Recorder", "--hide-empty"], capsys)
    assert code == 0 and "Recorder" in out and "TrainEvalCallback" not in out.split("Callbacks in call order")[0]
    if shutil.which("dot"):
        assert run(["show", "-f", "svg", "-o", str(tmp_path / "loop.svg")], capsys)[0] == 0
        ET.parse(tmp_path / "loop.svg")
    code, _, err = run(["show", "-f", "png"], capsys)
    assert code == 2 and "give -o loop.png" in err


def test_targets(tmp_path, capsys, monkeypatch):
    script = tmp_path / "train.py"
    script.write_text(LEARNER_FILE)
    code, out, _ = run(["show", str(script)], capsys)
    assert code == 0 and "GradientClip" in out
    (tmp_path / "mylearners.py").write_text(LEARNER_FILE + "\ndef make():\n    return learn\nnot_a_learner = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run(["show", "mylearners:learn"], capsys)[0] == 0
    assert run(["show", "mylearners:make"], capsys)[0] == 0
    for target, message in [("mylearners:not_a_learner", "is a int, not a fastai Learner"),
                            ("nosuchmodule:learn", "cannot import module 'nosuchmodule'"),
                            ("mylearners:nope", "has no attribute 'nope'"),
                            ("mylearners", "must be module:attr"),
                            (str(tmp_path / "missing.py"), "no such file")]:
        code, _, err = run(["show", target], capsys)
        assert code == 1 and message in err and "Traceback" not in err, (target, err)


def test_trace_report_and_diff(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json.gz"
    code, out, _ = run(["trace", "--epochs", "1", "-o", str(a)], capsys)
    assert code == 0 and "Trace of fastai" in out and f"wrote {a}" in out
    assert run(["trace", "--changes", "-o", str(b)], capsys)[0] == 0
    code, out, _ = run(["report", str(a)], capsys)
    assert code == 0 and "Events and work" in out
    assert run(["report", str(a), "-f", "csv", "-o", str(tmp_path / "spans.csv")], capsys)[0] == 0
    assert (tmp_path / "spans.csv").read_text().startswith("kind,name,callback")
    assert run(["report", str(a), "-f", "chrome", "-o", str(tmp_path / "t.perfetto.json")], capsys)[0] == 0
    assert "traceEvents" in json.loads((tmp_path / "t.perfetto.json").read_text())
    assert run(["report", str(a), "-f", "svg", "-o", str(tmp_path / "plot.svg")], capsys)[0] == 0
    ET.parse(tmp_path / "plot.svg")
    code, out, _ = run(["diff", str(a), str(b)], capsys)
    assert code == 0 and "Callbacks: before / after" in out


def test_bad_input_is_one_line_with_the_right_exit_code(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(["report", str(tmp_path / "bad.json")], capsys)
    assert code == 1 and "is not a loopviz trace" in err and "Traceback" not in err
    code, _, err = run(["report", str(tmp_path / "missing.json")], capsys)
    assert code == 1 and "no trace file" in err
    code, _, err = run(["show", "--loop", "train"], capsys)
    assert code == 1 and "loop='train' is not a loop loopviz knows" in err
    code, _, err = run(["show", "--cbs", "Nope"], capsys)
    assert code == 1 and "not a fastai Callback class" in err
    code, _, err = run(["show", "--format", "jpeg"], capsys)
    assert code == 2 and "Invalid value for '--format'" in err
    code, _, err = run(["show", "--debug", "--loop", "train"], capsys)
    assert code == 2  # --debug belongs before the command
    code, _, err = run(["--debug", "show", "--loop", "train"], capsys)
    assert code == 1 and "Traceback" in err


def test_help_and_the_module_entry_point():
    for args in ([], ["show"], ["trace"], ["report"], ["diff"]):
        done = subprocess.run([sys.executable, "-m", "loopviz", *args, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Usage:" in done.stdout, args
    done = subprocess.run([sys.executable, "-m", "loopviz", "show"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.splitlines()[0] == "Start Create"


def test_show_rich_to_a_file(tmp_path, capsys):
    assert main(["show", "-f", "rich", "-o", str(tmp_path / "loop.txt")]) == 0
    text = (tmp_path / "loop.txt").read_text()
    assert "before_fit" in text and "Callbacks in call order" in text
    capsys.readouterr()
