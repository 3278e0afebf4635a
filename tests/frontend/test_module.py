"""The browser modules are joined from `static/` files (`widgets/module.py`): a function one file
calls from another must be joined into every module that calls it (a missing `markdown.js`
only shows as a ReferenceError in the browser), and the CSS minifier must not change what a
selector means."""

from __future__ import annotations

import re

import pytest

from letta_nb.widgets import batch_view, dashboard, run_view
from letta_nb.widgets.module import STATIC, source, strip_css

VIEWS = {"run": run_view, "batch": batch_view, "dashboard": dashboard}


def _defined(code: str) -> set[str]:
    return set(re.findall(r"^\s*function\s+(\w+)\s*\(", code, re.M))


@pytest.mark.parametrize("name", list(VIEWS))
def test_every_shared_function_a_module_calls_is_joined_into_it(name: str) -> None:
    view = VIEWS[name]
    code = source(view.JS_FILES, view.CSS_FILES, readable=True)
    shared: dict[str, str] = {}
    for path in sorted(STATIC.glob("*.js")):
        for fn in _defined(path.read_text(encoding="utf-8")):
            shared.setdefault(fn, path.name)
    mine = _defined(code)
    body = re.sub(r"//.*", "", code)  # comments may name functions they do not call
    called = {fn for fn in shared if re.search(rf"(?<![\w.]){fn}\(", body)}
    missing = {fn: shared[fn] for fn in called - mine}
    assert not missing, f"the {name} module calls functions it does not join: {missing}"


def test_every_static_file_is_joined_into_some_module() -> None:
    used = {f for v in VIEWS.values() for f in (*v.JS_FILES, *v.CSS_FILES)}
    on_disk = {p.name for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
    assert on_disk == used


def test_the_css_minifier_keeps_descendant_spaces_and_drops_the_others() -> None:
    css = """
    /* a comment */
    .lnb-md :is(h4, h5) ,  .a > .b :first-child { margin : 0 ; color: red }
    :is(.x, .y) .z { display : none; }
    """
    assert strip_css(css) == (
        ".lnb-md :is(h4,h5),.a>.b :first-child{margin:0;color:red}:is(.x,.y) .z{display:none;}"
    )
