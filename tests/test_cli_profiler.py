"""`loopviz merge TRACE PROFILER_JSON -o FILE`: a saved trace and a torch.profiler Chrome trace of the same fit in
one Perfetto file, with CliRunner; clear one-line errors for bad inputs."""
from __future__ import annotations

import gzip
import json
import re

import pytest
from click.testing import CliRunner

from loopviz.cli import cli
from tests.test_trace_profiler import traced_and_profiled


def run(*args: str):
    """Exit code, stdout and stderr of one in-process command."""
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small fit traced with ranges=True inside a CPU profiler: the saved trace and the profiler's export (.gz)."""
    folder = tmp_path_factory.mktemp("merge")
    t, prof = traced_and_profiled(folder)
    trace, kineto = t.save(folder / "fit.json"), folder / "fit.pt.trace.json.gz"
    prof.export_chrome_trace(str(kineto))
    return trace, kineto, len(t.firings_df())


def loopviz_and_aten(merged):
    """loopviz's spans and the profiler's aten operators in a merged file."""
    events = merged["traceEvents"]
    ours = [e for e in events if e.get("cat") in ("loop", "event", "callback", "work")]
    return ours, [e for e in events if e.get("cat") == "cpu_op" and e["name"].startswith("aten::")]


def test_merge_writes_one_file_of_both(files, tmp_path):
    trace, kineto, firings = files
    out = tmp_path / "merged.json"
    code, stdout, err = run("merge", trace, kineto, "-o", out)
    assert code == 0, err
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: profiler placed by {firings} event ranges \(ranges=True\), "
                        rf"median offset -?[\d.]+ µs after Unix time; its window covers firings 0-{firings - 1} "
                        rf"\({firings} of {firings}\)\n", stdout), stdout
    merged = json.loads(out.read_text())
    ours, aten = loopviz_and_aten(merged)
    assert {"loop", "event", "callback", "work"} <= {e["cat"] for e in ours}
    assert any(e["name"] == "aten::mul" for e in aten)
    assert not {e["pid"] for e in ours} & {e["pid"] for e in aten}  # apart in Perfetto
    assert merged["otherData"]["profiler"]["of_firings"] == firings


def test_merge_to_gzip_and_to_standard_output(files, tmp_path):
    trace, kineto, _ = files
    code, stdout, err = run("merge", trace, kineto, "-o", tmp_path / "merged.json.gz")
    assert code == 0 and stdout.startswith(f"wrote {tmp_path / 'merged.json.gz'}: profiler placed by"), err
    written = json.loads(gzip.decompress((tmp_path / "merged.json.gz").read_bytes()))
    code, stdout, err = run("merge", trace, kineto, "-o", "-")
    assert code == 0 and err.startswith("profiler placed by") and len(err.splitlines()) == 1
    printed = json.loads(stdout)  # exactly the JSON: the summary went to stderr
    assert [len(part) for part in loopviz_and_aten(printed)] == [len(part) for part in loopviz_and_aten(written)]


@pytest.mark.parametrize("which, content, message", [
    ("profiler", None, "PROFILER_JSON: no profiler trace at '{path}': check the path."),
    ("trace", None, "TRACE: no trace file at '{path}': check the path."),
    ("profiler", "{not json", "PROFILER_JSON: '{path}' is not a Chrome trace (not JSON:"),
    ("profiler", '{"events": []}', "PROFILER_JSON: '{path}' is not a Chrome trace (it has no 'traceEvents' list): "
                                   "give the JSON that torch.profiler's prof.export_chrome_trace(path) wrote."),
    ("profiler", '{"traceEvents": []}', "the profiler trace holds no events: was the profiler active during the fit?"),
])
def test_a_bad_input_is_one_line_naming_it(files, tmp_path, which, content, message):
    trace, kineto, _ = files
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    args = (trace, bad) if which == "profiler" else (bad, kineto)
    code, stdout, err = run("merge", *args, "-o", tmp_path / "merged.json")
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("loopviz: " + message.format(path=bad)), err
    assert not (tmp_path / "merged.json").exists()


def test_the_files_given_the_wrong_way_round_say_so(files, tmp_path):
    trace, kineto, _ = files
    code, _, err = run("merge", kineto, trace, "-o", tmp_path / "merged.json")
    assert code == 1 and err.startswith(f"loopviz: TRACE: '{kineto}' is not a loopviz trace")
    assert err.rstrip().endswith("the loopviz trace comes first, the profiler's JSON second.")
    code, _, err = run("merge", trace, trace, "-o", tmp_path / "merged.json")
    assert code == 1 and err.startswith(f"loopviz: PROFILER_JSON: '{trace}' is a loopviz trace, not the profiler's")


def test_merge_needs_an_output_and_a_writable_one(files, tmp_path):
    trace, kineto, _ = files
    code, _, err = run("merge", trace, kineto)
    assert code == 2 and "Missing option '--output' / '-o'" in err
    code, _, err = run("merge", trace, kineto, "-o", tmp_path / "no" / "merged.json")
    assert code == 1 and err.startswith(f"loopviz: cannot write '{tmp_path / 'no' / 'merged.json'}': the folder")


# the profiler's fields as the hostile files of issue 24 wrote them (JSON text): each printed a raw exception
# (`TypeError: unhashable type: 'list'`) or, for a NaN time, exited 0 having written NaN into the merged file
BAD_FIELDS = [
    ("ts", '"abc"', "'abc', not a finite number of µs"), ("ts", "null", "null, not a finite number of µs"),
    ("ts", "[1]", "a list of 1, not a finite number of µs"), ("ts", "1e400", "Infinity, not a finite number of µs"),
    ("ts", "NaN", "NaN, not a finite number of µs"), ("dur", '"5"', "'5', not a finite number of µs"),
    ("cat", '["kernel"]', "a list of 1, not a string"), ("cat", '{"k": 1}', "an object, not a string"),
    ("baseTimeNanoseconds", '"1"', "'1', not an integer"), ("baseTimeNanoseconds", "NaN", "NaN, not an integer"),
    ("baseTimeNanoseconds", "Infinity", "Infinity, not an integer"),
    ("baseTimeNanoseconds", "1e400", "Infinity, not an integer"),
    ("baseTimeNanoseconds", "[1]", "a list of 1, not an integer"),
]


@pytest.mark.parametrize("field, text, expected", BAD_FIELDS)
def test_a_bad_profiler_field_is_one_line_naming_it_and_its_event(files, tmp_path, field, text, expected):
    trace, kineto, _ = files
    data = json.loads(gzip.decompress(kineto.read_bytes()))
    index = next(i for i, e in enumerate(data["traceEvents"]) if e.get("ph") == "X")
    (data if field == "baseTimeNanoseconds" else data["traceEvents"][index])[field] = "@BAD@"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data).replace('"@BAD@"', text))
    code, stdout, err = run("merge", trace, bad, "-o", tmp_path / "merged.json")
    at = "" if field == "baseTimeNanoseconds" else f" of traceEvents[{index}]"
    assert code == 1 and stdout == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"loopviz: PROFILER_JSON: '{bad}': field {field!r}{at}: is {expected}"), err
    assert not (tmp_path / "merged.json").exists()
