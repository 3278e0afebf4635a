"""Shipping a browser module with a widget: no CDN, no build step, no JupyterLab extension.

Each view class carries the same tiny `_esm` loader; it inflates the real module from the
`_module` trait (deflated bytes: the comm sends them as a binary buffer, no base64) and imports
it from a Blob URL. A module is some files of `static/` joined (comments and indentation
stripped) with its CSS inlined as the `CSS` constant.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from pathlib import Path

STATIC = Path(__file__).parent / "static"

#: The `_esm` every view carries: it inflates the module from the `_module` trait and imports
#: it from a Blob URL.
LOADER = (
    "export default()=>{let w;return{"
    "async initialize(c){"
    'const v=c.model.get("_module");'
    "const b=new Uint8Array(v.buffer,v.byteOffset,v.byteLength);"
    "const s=await new Response(new Blob([b]).stream()"
    '.pipeThrough(new DecompressionStream("deflate"))).text();'
    'const u=URL.createObjectURL(new Blob([s],{type:"text/javascript"}));'
    "try{w=(await import(u)).default()}finally{URL.revokeObjectURL(u)}"
    "return w.initialize(c)},"
    "render(c){return w.render(c)}}};"
)


def strip_js(source: str) -> str:
    """Comment-only lines and indentation out (the modules have no multi-line strings)."""
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//"))


def strip_css(source: str) -> str:
    """Comments and spaces out. In selectors the space before a `:` stays (in `.a :is(.b)` it
    is the descendant combinator); in declarations it goes."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r"\s+", " ", source)
    source = re.sub(r"\s*([{};,>])\s*", r"\1", source)
    out: list[str] = []
    depth = 0
    for part in re.split(r"([{}])", source):
        if part == "{":
            depth += 1
        elif part == "}":
            depth -= 1
        elif depth > 0:
            part = re.sub(r"\s*:\s*", ":", part)
        out.append(part)
    return "".join(out).strip()


def source(js: tuple[str, ...], css: tuple[str, ...], *, readable: bool = False) -> str:
    """The ES module made of these `static/` files (JS joined, CSS inlined as `CSS`)."""
    styles = "\n".join((STATIC / name).read_text(encoding="utf-8") for name in css)
    code = "\n".join((STATIC / name).read_text(encoding="utf-8") for name in js)
    if not readable:
        styles, code = strip_css(styles), strip_js(code)
    return f"const CSS = {json.dumps(styles)};\n{code}"


@functools.cache
def packed(js: tuple[str, ...], css: tuple[str, ...]) -> bytes:
    """The module deflated: it travels once per view (and per page reload) as `_module`."""
    return zlib.compress(source(js, css).encode(), 9)
