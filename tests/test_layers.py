"""The layers of the trace side, read from the imports (every import, those inside functions included).

Recording (recorder, clocks, waits, patches) writes the data model (`TraceData` and its records); analysis is
pure functions of that model; views read the analysis; the live view reads the recording while it goes on, and
analyses and shows it, above everything else. Checked by reading the source, as the model's own
isolation is checked in tests/test_model.py by importing it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "loopviz"
TRACE = PACKAGE / "trace"

MODEL = {"data", "layout", "records", "sketch", "datawork"}  # what a trace holds
RECORDING = {"record", "clock", "waits", "instrument", "spool"}  # what writes it while a loop runs
ANALYSIS = {"reports", "select", "notes", "batches", "observed", "compare", "diagnose", "cost", "datatiming"}  # pure functions of the model
VIEWS = {"display", "html", "plot", "families", "chrome", "profiler"}  # what users see and save
STORAGE = {"files", "validate", "jsontext"}  # files in and out, and JSON text
FACADE = {"trace", "merge", "outputs", "diagnosis", "__init__"}  # `Trace`, a `MergedTrace` of ranks, what either writes: every layer
LIVE = {"live", "live_display"}  # while a loop runs: the recording read, analysed and shown (everything below)
BASICS = {"loopviz.errors", "loopviz.checks", "loopviz.model"}  # framework-free helpers anything may use
FRAMEWORKS = ("fastai", "fastcore", "lightning", "pytorch_lightning", "transformers", "loopviz.adapters")
RENDERING = ("loopviz.renderers", "loopviz.diagram", "loopviz.view", "loopviz.annotate", "rich", "matplotlib",
             "graphviz")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function ('from loopviz.trace import validate' counts
    as loopviz.trace.validate)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def trace_layer(module: str) -> str:
    """The layer of a module of loopviz.trace."""
    for name, members in (("model", MODEL), ("recording", RECORDING), ("analysis", ANALYSIS), ("views", VIEWS),
                          ("storage", STORAGE), ("facade", FACADE), ("live", LIVE)):
        if module in members:
            return name
    raise AssertionError(f"loopviz/trace/{module}.py is in no layer: add it to one in tests/test_layers.py")


def trace_modules_imported(path: Path) -> set[str]:
    return {name.split(".")[2] for name in imports(path) if name.startswith("loopviz.trace.") and
            (TRACE / f"{name.split('.')[2]}.py").exists()}


ALLOWED = {  # layer -> the trace layers it may import
    "model": {"model"},
    "recording": {"model", "recording"},
    "analysis": {"model", "analysis"},
    "views": {"model", "analysis", "views", "storage"},
    "storage": {"model", "storage"},
    "facade": {"model", "recording", "analysis", "views", "storage", "facade"},
    "live": {"model", "recording", "analysis", "views", "storage", "facade", "live"},
}


@pytest.mark.parametrize("path", sorted(TRACE.glob("*.py")), ids=lambda p: p.stem)
def test_each_trace_module_imports_only_the_layers_below_it(path):
    layer = trace_layer(path.stem)
    wrong = {m for m in trace_modules_imported(path) - {path.stem} if trace_layer(m) not in ALLOWED[layer]}
    assert not wrong, f"{path.stem} ({layer}) imports {sorted(wrong)} ({[trace_layer(m) for m in sorted(wrong)]})"


@pytest.mark.parametrize("path", sorted(TRACE.glob("*.py")), ids=lambda p: p.stem)
def test_nothing_in_the_trace_package_imports_a_framework(path):
    wrong = {name for name in imports(path) if name.startswith(FRAMEWORKS)}
    assert not wrong, f"loopviz/trace/{path.name} imports {sorted(wrong)}: adapters pass what a tracer needs"


@pytest.mark.parametrize("path", sorted(p for p in TRACE.glob("*.py") if p.stem in MODEL | RECORDING | ANALYSIS),
                         ids=lambda p: p.stem)
def test_model_recording_and_analysis_import_no_renderer(path):
    wrong = {name for name in imports(path) if name.startswith(RENDERING)}
    assert not wrong, f"loopviz/trace/{path.name} imports {sorted(wrong)}"


def test_checks_import_no_trace_and_no_renderer():
    wrong = {name for name in imports(PACKAGE / "checks.py") if name.startswith(("loopviz.trace", *RENDERING))}
    assert not wrong


def _strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of a module that are not docstrings, with their line numbers."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", sorted(TRACE.glob("*.py")), ids=lambda p: p.stem)
def test_no_string_in_the_trace_package_names_a_framework(path):
    """Labels, prefixes and event names come from the adapter (kept in the trace's meta), not from trace/."""
    named = [(line, text) for line, text in _strings(path)
             if any(word in text.lower() for word in ("fastai", "lightning", "hugging face", "transformers"))]
    assert not named, f"loopviz/trace/{path.name}: {named}"


def test_the_layer_test_reads_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from loopviz.trace import html\n    import rich.table\n")
    assert imports(probe) >= {"loopviz.trace.html", "rich.table"}
