"""Execute every notebook in nbs/ in place, so they are committed with their outputs: `python nbs/execute.py`."""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main() -> None:
    """Run each notebook top to bottom in its own folder and save it with its outputs."""
    for path in sorted(Path(__file__).parent.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
        nbformat.write(nb, path)
        print(f"executed {path.name}")


if __name__ == "__main__":
    main()
