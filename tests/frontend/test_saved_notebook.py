"""A notebook executed and saved by nbclient keeps each run's final transcript (issue 12.4).

nbclient records only the messages of the cell it is executing, so the view publishes its final
state (the `snapshot` trait and the output's text/html) on whichever cell runs when the chain
settles. nbconvert then shows that text/html (with `display_data_priority` putting text/html
first; by default it prefers the widget, which needs the widget state and a network).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from traitlets.config import Config

from letta_nb.widgets.doc import decode_doc

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def executed(server: Any, tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_code_cell(f"%load_ext letta_nb\n%letta connect {server.base_url}"),
        nbformat.v4.new_code_cell("%%letta --new --out h\n/long 30 20"),
        nbformat.v4.new_code_cell("%%letta --new --out g\n/gated"),
        nbformat.v4.new_code_cell(
            "g.wait(30)\ng.deny('<script>window.x=1</script> not yet')\n"
            "print(h.wait(30), g.wait(30))"
        ),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    path: Path = tmp_path_factory.mktemp("saved") / "saved.ipynb"
    nbformat.write(nb, path)
    return nbformat.read(path, as_version=4)


def live_output(nb: nbformat.NotebookNode, index: int) -> dict[str, Any]:
    (out,) = [o for o in nb.cells[index].outputs if WIDGET_VIEW in o.get("data", {})]
    return dict(out["data"])


def test_the_saved_output_holds_the_final_transcript(executed: nbformat.NotebookNode) -> None:
    assert executed.cells[3].outputs[-1]["text"] == "completed completed\n"
    html = live_output(executed, 1)["text/html"]
    assert "completed" in html and "token30" in html and "token1 token2" in html
    denied = live_output(executed, 2)["text/html"]
    assert "✗ denied · write_report — &lt;script&gt;" in denied
    assert "<script>" not in denied and "&lt;script&gt;window.x=1&lt;/script&gt;" in denied
    assert "nothing was written" in denied


def test_the_saved_widget_state_is_the_final_document(executed: nbformat.NotebookNode) -> None:
    states = executed.metadata["widgets"][WIDGET_STATE]["state"]
    model = live_output(executed, 1)[WIDGET_VIEW]["model_id"]
    saved = states[model]
    (buffer,) = [b for b in saved.get("buffers", []) if b["path"] == ["snapshot"]]
    doc = decode_doc(base64.b64decode(buffer["data"]))
    assert doc["h"]["st"] == "completed" and not doc["h"]["ctl"]
    assert doc["e"][0]["x"].endswith("token30")


def test_nbconvert_html_shows_the_final_transcript(executed: nbformat.NotebookNode) -> None:
    # what the README says to pass: --NbConvertBase.display_data_priority="['text/html', ...]"
    config = Config({"NbConvertBase": {"display_data_priority": ["text/html", "text/plain"]}})
    body, _ = HTMLExporter(config=config).from_notebook_node(executed)
    assert "token30" in body and "completed" in body
    assert "✗ denied · write_report" in body
    assert "<script>window.x=1" not in body
    default, _ = HTMLExporter().from_notebook_node(executed)  # widget state present: a widget
    assert WIDGET_STATE in default and json.dumps(WIDGET_VIEW)[1:-1] in default
