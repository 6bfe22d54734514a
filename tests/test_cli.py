"""The `loopviz` command, in-process with click's CliRunner: show, trace, report, diff; formats chosen from -o's
ending through the one format table; exit codes and one-line errors. One real subprocess per command at the end."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from loopviz.cli import cli
from loopviz.formats import LOOP_FORMATS, REPORT_FORMATS
from loopviz.trace.clock import clock_names

LEARNER_FILE = '''
from fastai.test_utils import synth_learner
from fastai.callback.all import GradientClip
learn = synth_learner(cbs=[GradientClip()])
'''
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")


def run(*args: str):
    """Exit code, stdout and stderr of one in-process command."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Two saved traces of the built-in learner: a.json (plain) and b.json.gz (with state changes)."""
    folder = tmp_path_factory.mktemp("traces")
    a, b = folder / "a.json", folder / "b.json.gz"
    assert run("trace", "--epochs", "1", "-o", str(a))[0] == 0
    assert run("trace", "--changes", "-o", str(b))[0] == 0
    return a, b


def test_show_the_built_in_learner():
    code, out, _ = run("show", "--verbose", "--cbs", "GradientClip", "--cbs", "fastai.callback.all:SaveModelCallback")
    assert code == 0 and out.startswith("The fit loop of fastai")
    assert "GradientClip (order 11)" in out and "SaveModelCallback (order 61)" in out


@pytest.mark.parametrize("name, check", [
    ("loop.txt", lambda p: p.read_text().startswith("Start Create")),
    ("loop.mmd", lambda p: p.read_text().startswith("flowchart TB")),
    ("loop.dot", lambda p: p.read_text().startswith("digraph loop {")),
    ("loop.gv", lambda p: p.read_text().startswith("digraph loop {")),
    pytest.param("loop.svg", lambda p: ET.parse(p).getroot().tag.endswith("svg"), marks=needs_dot),
    pytest.param("loop.png", lambda p: p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", marks=needs_dot),
    pytest.param("loop.pdf", lambda p: p.read_bytes()[:5] == b"%PDF-", marks=needs_dot),
])
def test_show_infers_the_format_from_the_file_name(tmp_path, name, check):
    code, out, err = run("show", "-o", str(tmp_path / name))
    assert code == 0 and out.strip() == f"wrote {tmp_path / name}", err
    assert check(tmp_path / name)


def test_show_formats_printed_and_explicit(tmp_path):
    code, out, _ = run("show", "-f", "dot")
    assert code == 0 and out.startswith("digraph loop {")
    code, out, _ = run("show", "-f", "graphviz")
    assert code == 0 and out.startswith("digraph loop {")
    code, out, _ = run("show", "-f", "rich", "--focus", "Recorder", "--hide-empty")
    assert code == 0 and "Recorder" in out and "TrainEvalCallback" not in out.split("Callbacks in call order")[0]
    code, _, _ = run("show", "-f", "rich", "-o", str(tmp_path / "loop.txt"))  # .txt: text's and rich's ending
    text = (tmp_path / "loop.txt").read_text()
    assert code == 0 and "before_fit" in text and "Callbacks in call order" in text
    code, _, _ = run("show", "-f", "mermaid", "-o", str(tmp_path / "chart.any"))  # explicit: any other ending is fine
    assert code == 0 and (tmp_path / "chart.any").read_text().startswith("flowchart TB")


@pytest.mark.parametrize("args, message", [
    (["-f", "text", "-o", "loop.svg"], "--format text contradicts the file name"),
    (["-f", "mermaid", "-o", "loop.png"], "which asks for png"),
    (["-f", "graphviz", "-o", "loop.mmd"], "which asks for mermaid"),
    (["-o", "loop.jpeg"], "cannot tell the format of 'loop.jpeg' from its ending; use one of: .txt, .mmd, .mermaid"),
    (["-f", "png"], "--format png writes a file: give -o loop.png"),
    (["-f", "jpeg"], "Invalid value for '--format'"),
])
def test_show_usage_errors_exit_2(tmp_path, args, message):
    code, _, err = run("show", *args)
    assert code == 2 and message in err, err
    assert not list(tmp_path.iterdir())


def test_every_format_in_the_table_is_a_choice():
    help_text = run("show", "--help")[1] + run("report", "--help")[1]
    for fmt in (*LOOP_FORMATS, *REPORT_FORMATS):
        assert fmt.name in help_text and all(ext in help_text for ext in fmt.extensions)
    assert run("trace", "--help")[1].count("|".join(clock_names())) == 1


def test_targets(tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    script.write_text(LEARNER_FILE)
    code, out, _ = run("show", str(script))
    assert code == 0 and "GradientClip" in out
    (tmp_path / "mylearners.py").write_text(LEARNER_FILE + "\ndef make():\n    return learn\nnot_a_learner = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run("show", "mylearners:learn")[0] == 0
    assert run("show", "mylearners:make")[0] == 0
    for target, message in [("mylearners:not_a_learner", "is a int, not a fastai Learner, a miniai-style learner, a Hugging Face Trainer or a Lightning"),
                            ("nosuchmodule:learn", "cannot import module 'nosuchmodule'"),
                            ("mylearners:nope", "has no attribute 'nope'"),
                            ("mylearners", "must be module:attr"),
                            (str(tmp_path / "missing.py"), "no such file")]:
        code, _, err = run("show", target)
        assert code == 1 and message in err and "Traceback" not in err, (target, err)


def test_a_miniai_style_learner_is_a_target_too(monkeypatch, tmp_path):
    (tmp_path / "mini.py").write_text("from tests.test_generic_loops import miniai_learner\nlearn = miniai_learner()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run("show", "mini:learn")
    assert code == 0 and "before_fit" in out and "cleanup_fit" in out, err
    code, out, err = run("trace", "mini:learn", "-o", str(tmp_path / "mini.json"))
    assert code == 0 and "Trace of miniai-style learner" in out, err
    code, _, err = run("trace", "mini:learn", "--changes")
    assert code == 1 and "state changes are recorded for fastai learners only" in err


def test_trace_report_and_diff(traces, tmp_path):
    a, b = traces
    code, out, _ = run("report", str(a))
    assert code == 0 and "Events and work" in out
    code, out, _ = run("diff", str(a), str(b))
    assert code == 0 and "Callbacks: before / after" in out


@pytest.mark.parametrize("name, check", [
    ("spans.csv", lambda p: p.read_text().startswith("kind,name,callback")),
    ("t.perfetto.json", lambda p: "traceEvents" in json.loads(p.read_text())),
    ("t.json", lambda p: "traceEvents" in json.loads(p.read_text())),
    ("plot.svg", lambda p: ET.parse(p).getroot().tag.endswith("svg")),
    ("report.txt", lambda p: "Events and work" in p.read_text()),
    ("fit.html", lambda p: p.read_text().startswith("<!DOCTYPE html>") and 'id="diagram-details"' in p.read_text()),
])
def test_report_infers_the_format_from_the_file_name(traces, tmp_path, name, check):
    code, out, err = run("report", str(traces[0]), "-o", str(tmp_path / name))
    assert code == 0 and out.strip() == f"wrote {tmp_path / name}", err
    assert check(tmp_path / name)


def test_report_opens_with_the_findings_and_findings_alone_are_text_or_json(traces, tmp_path):
    from loopviz.trace.diagnosis import Diagnosis
    from loopviz.trace.trace import Trace

    a, b = traces
    code, out, _ = run("report", str(a))
    assert code == 0 and out.index("Largest shares of the run") < out.index("Events and work")
    assert "Findings (loopviz report --findings" in out or "Findings: none" in out
    code, out, err = run("report", str(a), "--findings")
    assert code == 0 and out.strip() == str(Trace.load(a).diagnose()), err
    code, out, err = run("report", str(a), "--findings", "-o", str(tmp_path / "findings.json"))
    assert code == 0 and out.strip() == f"wrote {tmp_path / 'findings.json'}", err
    back = Diagnosis.from_json(json.loads((tmp_path / "findings.json").read_text()))
    assert back == Trace.load(a).diagnose()
    for args, message in [([str(b)], "--findings reads one trace file"), (["-f", "csv"], "leave out --format")]:
        code, _, err = run("report", str(a), "--findings", *args)
        assert code == 2 and message in err, (args, err)


def test_report_usage_errors_exit_2(traces):
    a, b = traces
    for args, message in [(["-f", "csv", "-o", "x.svg"], "--format csv contradicts"),
                          (["-o", "x.xlsx"], "cannot tell the format of 'x.xlsx'"),
                          (["-f", "csv", str(b)], "several trace files merge into one of: table, chrome; not csv")]:
        code, _, err = run("report", str(a), *args)
        assert code == 2 and message in err, (args, err)


def test_bad_input_is_one_line_with_the_right_exit_code(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run("report", str(tmp_path / "bad.json"))
    assert code == 1 and "is not a loopviz trace" in err and "Traceback" not in err
    code, _, err = run("report", str(tmp_path / "missing.json"))
    assert code == 1 and "no trace file" in err
    code, _, err = run("show", "--loop", "train")  # a usage error: exit 2, as click's own
    assert code == 2 and "--loop 'train': a fastai Learner runs these loops: fit, fit_one_cycle" in err
    code, _, err = run("show", "--cbs", "Nope")
    assert code == 1 and "not a fastai Callback class" in err
    code, _, err = run("trace", "--clock", "gpu")
    assert code == 2 and "Invalid value for '--clock'" in err
    for args in (["show", "--debug", "--cbs", "Nope"], ["--debug", "show", "--cbs", "Nope"]):
        code, _, err = run(*args)
        assert code == 1 and "Traceback" in err, args  # --debug before or after the command's name


def test_a_module_in_the_current_directory_is_a_target(tmp_path):
    """As `python -m` would: the installed command imports TARGET's module from the current directory."""
    (tmp_path / "here_learner.py").write_text(LEARNER_FILE)
    command = shutil.which("loopviz", path=str(Path(sys.executable).parent))
    assert command is not None
    done = subprocess.run([command, "show", "here_learner:learn"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "GradientClip" in done.stdout, done.stderr


def test_an_output_path_is_checked_before_the_fit(tmp_path):
    for command, name in ((["trace"], "t.json"), (["show"], "loop.txt")):
        code, out, err = run(*command, "-o", str(tmp_path / "missing" / name))
        assert code == 1 and "does not exist; create it first" in err and "Trace of" not in out, (command, err)
        assert not (tmp_path / "missing").exists()


def test_a_target_that_exits_says_so(tmp_path):
    script = tmp_path / "exits.py"
    script.write_text("import sys\nsys.exit(3)\n")
    code, _, err = run("show", str(script))
    assert code == 1 and "the target exited (sys.exit(3))" in err and "Traceback" not in err


def test_ctrl_c_in_a_traced_fit_exits_130_and_leaves_fastai_as_it_was(tmp_path, capsys):
    from fastai.learner import Learner

    from loopviz.cli import main

    pristine = Learner._call_one
    script = tmp_path / "interrupted.py"
    script.write_text(LEARNER_FILE + "from fastai.callback.core import Callback\n"
                      "class Interrupt(Callback):\n"
                      "    def after_batch(self): raise KeyboardInterrupt\n"
                      "learn.add_cb(Interrupt())\n")
    assert main(["trace", str(script)]) == 130
    assert "loopviz: interrupted" in capsys.readouterr().err
    assert Learner._call_one is pristine


HEAVY = ("fastai", "torch", "pandas", "matplotlib", "graphviz")


def _imported_by(code: str) -> list[str]:
    """The heavy packages a fresh interpreter has imported after running `code`."""
    probe = f"import sys\n{code}\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()[1:]


def test_a_fast_start_imports_no_framework(traces):
    assert _imported_by("import loopviz") == []
    assert _imported_by("from loopviz.cli import main\nmain(['--help'])") == []
    for command in (["report", str(traces[0])], ["diff", str(traces[0]), str(traces[1])]):
        assert not {"fastai", "torch"} & set(_imported_by(f"from loopviz.cli import main\nmain({command!r})")), command


def test_importing_loopviz_first_still_patches_fastai():
    code = ("import loopviz\nfrom fastai.learner import Learner\n"
            "assert Learner.show_training_loop.__module__ == 'loopviz.adapters.fastai.patch'\n"
            "assert Learner.trace.__module__ == 'loopviz.adapters.fastai.tracer'")
    assert "fastai" in _imported_by(code)


@pytest.mark.parametrize("args", [["--help"], ["show", "-f", "mermaid"], ["trace", "--epochs", "1"], ["report"], ["diff"]])
def test_the_real_command_runs(args, traces):
    """One subprocess per command: the installed entry point and `python -m loopviz` both work."""
    if args == ["report"]:
        args = ["report", str(traces[0])]
    if args == ["diff"]:
        args = ["diff", str(traces[0]), str(traces[1])]
    done = subprocess.run([sys.executable, "-m", "loopviz", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_a_failing_patch_never_breaks_importing_fastai():
    code = ("import warnings, loopviz.adapters.fastai.hook as hook\n"
            "def broken():\n    raise ImportError('simulated')\n"
            "hook._apply_patch = broken\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always')\n"
            "    import fastai.learner\n"
            "assert any('could not patch' in str(w.message) for w in seen), seen")
    assert "fastai" in _imported_by(code)


def test_hostile_names_and_messages_reach_the_terminal_escaped(tmp_path):
    script = tmp_path / "hostile.py"
    script.write_text(LEARNER_FILE + "from fastai.callback.core import Callback\n"
                      "Cb = type('Title\\x1b]0;pwned\\x07Cb', (Callback,), {'after_batch': lambda self: None,\n"
                      "          '__doc__': 'clears \\x1b[2J the screen'})\n"
                      "learn.add_cb(Cb())\n")
    code, out, err = run("show", "--verbose", str(script))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "Title\\x1b]0;pwned\\x07Cb" in out
    raiser = tmp_path / "raiser.py"
    raiser.write_text("raise RuntimeError('line one\\n\\x1b[2Jline two')\n")
    code, _, err = run("show", str(raiser))
    assert code == 1 and err.count("\n") == 1 and "\x1b" not in err
    assert "RuntimeError: line one\\n\\x1b[2Jline two" in err


# -- report --top/--all, state changes, data on standard output, diff thresholds, no progress bar when piped ------

HOSTILE_CB = ("from fastai.callback.core import Callback\n"
              "Cb = type('Evil\\x1b[2JCb', (Callback,), {'after_batch': lambda self: None})\n"
              "learn.add_cb(Cb())\n")
MORE_LINE = "more rows: --top N shows more, --all shows every row"


def _table_rows(out: str, title: str) -> list[str]:
    """The body rows (those with a │) of the table called `title`, up to its caption or the next title."""
    lines = out.split(title, 1)[1].splitlines()[3:]
    return lines[: next((i for i, line in enumerate(lines) if "│" not in line), len(lines))]


def test_report_top_and_all_name_the_command_line_options(traces):
    a, _ = traces
    code, out, err = run("report", str(a), "--top", "3")
    assert code == 0, err
    assert ".summary()" not in out and ".by_callback()" not in out and out.count(MORE_LINE) == 2
    assert len(_table_rows(out, "Events and work (")) == 3 and len(_table_rows(out, "Callbacks (costliest")) == 3
    code, out, _ = run("report", str(a), "--all")
    assert code == 0 and "more rows" not in out
    assert len(_table_rows(out, "Callbacks (costliest")) > 10  # past the 10 the Python view shows
    code, out, _ = run("report", str(a))  # the default: 25 rows each
    assert code == 0 and len(_table_rows(out, "Events and work (")) == 25
    code, _, err = run("report", str(a), "--top", "0")
    assert code == 2 and "Invalid value for '--top'" in err


def test_report_and_trace_show_state_changes(traces):
    a, b = traces
    code, out, err = run("report", str(b), "--top", "2")
    assert code == 0, err
    rows = _table_rows(out, "State changes (")
    assert len(rows) == 2 and all("learn." in row for row in rows) and out.count(MORE_LINE) == 3
    assert "first (epoch, iter)" in out
    code, out, _ = run("report", str(b), "--all")
    assert code == 0 and "learn.train_iter" in out and "TrainEvalCallback" in out and "more rows" not in out
    assert "State changes" not in run("report", str(a))[1]  # none recorded: no table
    code, out, err = run("trace", "--changes", "--top", "1")
    assert code == 0 and len(_table_rows(out, "State changes (")) == 1, err
    assert out.index("State changes") > out.index("Callbacks (costliest")


def test_piped_trace_has_no_progress_bar_and_a_terminal_has_one(monkeypatch):
    code, out, err = run("trace")  # CliRunner's stdout is not a terminal
    assert code == 0 and "\r" not in out and "ProgressCallback" not in out and "Recorder" in out, err
    monkeypatch.setattr("loopviz.cli._stdout_is_terminal", lambda: True)
    code, out, _ = run("trace")
    assert code == 0 and "ProgressCallback" in out
    assert "only when standard output is a terminal" in " ".join(run("trace", "--help")[1].split())


def test_data_on_standard_output_is_the_bytes_of_the_file(tmp_path, monkeypatch):
    script = tmp_path / "hostile.py"
    script.write_text(LEARNER_FILE + HOSTILE_CB)
    trace_file = tmp_path / "h.json"
    assert run("trace", str(script), "-o", str(trace_file))[0] == 0
    for fmt, name in (("csv", "s.csv"), ("chrome", "s.perfetto.json")):
        assert run("report", str(trace_file), "-o", str(tmp_path / name))[0] == 0
        written = (tmp_path / name).read_bytes()
        for args in (["-f", fmt, "-o", "-"], ["-f", fmt]):
            result = CliRunner().invoke(cli, ["report", str(trace_file), *args])
            assert result.exit_code == 0 and result.stdout_bytes == written, (fmt, args)
    assert b"Evil\x1b[2JCb" in (tmp_path / "s.csv").read_bytes()  # the data is the true name
    monkeypatch.setattr("loopviz.cli._stdout_is_terminal", lambda: True)  # a terminal: shown escaped
    code, out, _ = run("report", str(trace_file), "-f", "csv", "-o", "-")
    assert code == 0 and "\x1b" not in out and "Evil\\x1b[2JCb" in out
    code, out, _ = run("report", str(trace_file))  # the table: always escaped
    assert code == 0 and "\x1b" not in out


def test_binary_output_to_standard_output_only_when_redirected(monkeypatch):
    result = CliRunner().invoke(cli, ["show", "-f", "pdf", "-o", "-"])
    if shutil.which("dot"):
        assert result.exit_code == 0 and result.stdout_bytes[:5] == b"%PDF-"
    monkeypatch.setattr("loopviz.cli._stdout_is_terminal", lambda: True)
    code, _, err = run("show", "-f", "png", "-o", "-")
    assert code == 2 and "writes a file: give -o loop.png" in err


def test_report_merges_ranks_with_top(traces, tmp_path):
    data = json.loads(traces[0].read_text())
    for rank in (0, 1):  # one fit's trace as two ranks' (no process group needed)
        data["meta"].update(rank=rank, world_size=2)
        (tmp_path / f"t.rank{rank}.json").write_text(json.dumps(data))
    code, out, err = run("report", str(tmp_path / "t.rank0.json"), str(tmp_path / "t.rank1.json"), "--top", "4")
    assert code == 0 and "Merged trace of 2 ranks" in out and MORE_LINE in out, err
    assert len(_table_rows(out, "Events and work across ranks")) == 4


def test_diff_totals_threshold_and_bad_files(traces, tmp_path):
    a, b = traces
    code, out, err = run("diff", str(a), str(a))
    assert code == 0 and "0 regression(s), 0 improvement(s)" in out, err
    assert "verdicts: a change of at least 5% per occurrence" in out and " total " in out and "events and work" in out
    code, out, _ = run("diff", str(a), str(b), "--min-change", "0", "--top", "2")
    assert code == 0 and "regression" in out and "verdicts: any change per occurrence" in out and MORE_LINE in out
    assert len(_table_rows(out, "Callbacks: before / after")) == 2  # the rows, then a rule and the totals row
    total = out.split("Callbacks: before / after", 1)[1].splitlines()[6]
    assert total.split("│")[0].strip() == "total" and total.split("│")[1].strip() == "callbacks"
    code, out, _ = run("diff", str(a), str(b), "--min-change", "1000%", "--min-change", "10s")
    assert code == 0 and "0 regression(s), 0 improvement(s)" in out and "at least 1000% and 10000 ms" in out
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = run("diff", str(a), str(tmp_path / "bad.json"))
    assert code == 1 and err.startswith("loopviz: AFTER") and "bad.json" in err and "Traceback" not in err
    code, _, err = run("diff", str(tmp_path / "nope.json"), str(a))
    assert code == 1 and err.startswith("loopviz: BEFORE") and "nope.json" in err
    code, _, err = run("diff", str(a), str(b), "--min-change", "fast")
    assert code == 2 and "'fast' is not a change; give a percentage (5%)" in err


def test_show_start_epoch(monkeypatch, tmp_path):
    code, out, err = run("show", "--start-epoch", "2")
    assert code == 0 and "SkipToEpoch" in out and "fit(start_epoch=2)" in out, err
    assert "SkipToEpoch" not in run("show")[1]
    code, _, err = run("show", "--start-epoch", "1", "--loop", "validate")
    assert code == 1 and "loop='validate' has no such option" in err and "Traceback" not in err
    code, _, err = run("show", "--start-epoch", "-1")
    assert code == 2 and "Invalid value for '--start-epoch'" in err
    (tmp_path / "mini2.py").write_text("from tests.test_generic_loops import miniai_learner\nlearn = miniai_learner()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run("show", "mini2:learn", "--start-epoch", "1")
    assert code == 2 and "--start-epoch is an option of fastai's fit" in err  # a usage error


def test_a_piped_trace_prints_the_report_and_each_epoch_as_a_named_line_apart():
    """Without fastai's progress bar its Recorder would print each epoch as a raw list among the report."""
    code, out, err = run("trace", "--epochs", "2")
    assert code == 0 and out.startswith("Trace of fastai") and "[0, " not in out
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[:3] for line in lines] == [["epoch", "0", "train_loss"], ["epoch", "1", "train_loss"]]
    assert all("valid_loss" in line and "time" in line for line in lines)
