"""How fast loopviz starts: the CLI's --help, `report` and `diff`, and `import loopviz` (issue 10's fast start).

For each command, in fresh interpreters: the minimum wall time over --repeats runs, the heavy packages it
imported, and the slowest imports by `python -X importtime` (cumulative µs). Run from the repository root:

    .venv/bin/python benchmarks/import_time.py --repeats 15
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("fastai", "torch", "pandas", "numpy", "matplotlib", "graphviz", "rich")


def _probe(code: str) -> str:
    """Python code running `code`, then printing which heavy packages are loaded."""
    return f"import sys\n{code}\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"


def _fresh_trace(folder: Path) -> Path:
    """A small saved trace to report on (made once, untimed)."""
    path = folder / "t.json"
    subprocess.run([sys.executable, "-m", "loopviz", "trace", "-o", str(path)], check=True, capture_output=True)
    return path


def _slowest_imports(code: str, n: int = 5) -> list[tuple[int, str]]:
    """The `n` top-level imports with the biggest cumulative time under -X importtime."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace = _fresh_trace(Path(tmp))
        cases = {
            "python -c pass (the floor)": "pass",
            "import loopviz": "import loopviz",
            "loopviz --help": "from loopviz.cli import main\nmain(['--help'])",
            "loopviz report t.json": f"from loopviz.cli import main\nmain(['report', {str(trace)!r}])",
            "loopviz diff t.json t.json": f"from loopviz.cli import main\nmain(['diff', {str(trace)!r}, {str(trace)!r}])",
            "import fastai.learner (for scale)": "import fastai.learner",
        }
        print("| command | min wall over runs | heavy packages imported | slowest top-level imports (cumulative) |")
        print("|---|---|---|---|")
        for name, code in cases.items():
            best = float("inf")
            loaded = ""
            for _ in range(args.repeats):
                start = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", _probe(code)], capture_output=True, text=True)
                best = min(best, time.perf_counter() - start)
                loaded = done.stdout.splitlines()[-1].removeprefix("imported:").strip() if done.stdout else "?"
            slow = ", ".join(f"{mod} {us / 1000:.0f} ms" for us, mod in _slowest_imports(code, 3))
            print(f"| `{name}` | {best * 1000:.0f} ms | {loaded or 'none'} | {slow} |")


if __name__ == "__main__":
    main()
