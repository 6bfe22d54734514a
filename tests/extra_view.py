"""A view written for the tests the way the README says to add one: one function, one row in the format table."""
from __future__ import annotations

import json

from loopviz.model import LoopSpec
from loopviz.renderers.shown import handlers_shown


def render_json(spec: LoopSpec, verbose: bool = False, width: int = 100) -> str:
    """The loop's events and the callbacks shown at each, as JSON."""
    return json.dumps({e.name: [h.callback.cls for h in handlers_shown(e, verbose)] for e in spec.events()})
