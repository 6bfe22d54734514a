"""`python -m loopviz`: the `loopviz` command (see `loopviz --help`)."""
from __future__ import annotations

import sys

from loopviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
