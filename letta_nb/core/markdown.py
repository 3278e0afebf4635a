"""A small, safe Markdown subset → HTML, for the static copy of a run (saved notebooks, nbconvert).

The live view renders the same subset in the browser (`widgets/static/run_view.js`, DOM built
with `textContent`, never `innerHTML`); this is its twin for the `text/html` fallback. Safety
comes from construction, not from cleaning: every piece of model text is HTML-escaped and the
only tags are the ones written here; links keep only `http`, `https` and `mailto` targets.

Blocks: paragraphs (single newlines are line breaks), `#`-headings, fenced code, pipe tables,
`-`/`*`/`+` and `1.` lists, `>` quotes, `---` rules. Inline: `code`, **bold**, *italic* /
_italic_, [links](https://…).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

#: Link targets that may become `href`s; anything else (javascript:, data:, relative) is text.
SAFE_SCHEMES = ("http://", "https://", "mailto:")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBER = re.compile(r"^\s*\d{1,9}[.)]\s+(.*)$")
_QUOTE = re.compile(r"^\s{0,3}>\s?(.*)$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")
_INLINE = re.compile(
    r"(?P<code>`+)(?P<codetext>.+?)(?P=code)"
    r"|\[(?P<ltext>[^\]\n]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<b1>\S(?:.*?\S)?)\*\*|__(?P<b2>\S(?:.*?\S)?)__"
    r"|\*(?P<i1>[^*\s](?:[^*]*?[^*\s])?)\*|(?<![\w])_(?P<i2>[^_\s](?:[^_]*?[^_\s])?)_(?![\w])"
)

#: Heading levels map to small headings: a notebook output is not a page.
_HEAD_TAG = {1: "h4", 2: "h5"}


def safe_href(url: str) -> str | None:
    """The URL if its scheme is allowed, else None (the link is shown as text)."""
    lowered = url.strip().lower()
    return url.strip() if lowered.startswith(SAFE_SCHEMES) else None


def inline_html(text: str) -> str:
    """Escaped text with the inline Markdown subset applied."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        pos = m.end()
        if m.group("code"):
            out.append(f"<code>{html.escape(m.group('codetext').strip())}</code>")
        elif m.group("ltext") is not None:
            href = safe_href(m.group("href"))
            inner = inline_html(m.group("ltext"))
            if href is None:
                out.append(html.escape(m.group(0)))
            else:
                out.append(
                    f'<a href="{html.escape(href, quote=True)}" target="_blank" '
                    f'rel="noopener noreferrer">{inner}</a>'
                )
        elif m.group("b1") is not None or m.group("b2") is not None:
            out.append(f"<strong>{inline_html(m.group('b1') or m.group('b2'))}</strong>")
        else:
            out.append(f"<em>{inline_html(m.group('i1') or m.group('i2'))}</em>")
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _aligns(sep: str) -> list[str]:
    out = []
    for cell in _cells(sep):
        left, right = cell.startswith(":"), cell.endswith(":")
        out.append("center" if left and right else "right" if right else "left")
    return out


def _table(rows: list[str]) -> str:
    head, aligns, body = _cells(rows[0]), _aligns(rows[1]), [_cells(r) for r in rows[2:]]

    def row(cells: list[str], tag: str) -> str:
        tds = []
        for i, cell in enumerate(cells):
            align = aligns[i] if i < len(aligns) else "left"
            tds.append(f'<{tag} style="text-align:{align}">{inline_html(cell)}</{tag}>')
        return "<tr>" + "".join(tds) + "</tr>"

    return (
        "<table><thead>"
        + row(head, "th")
        + "</thead><tbody>"
        + "".join(row(r, "td") for r in body)
        + "</tbody></table>"
    )


def _starts_block(line: str, nxt: str | None) -> bool:
    return bool(
        _FENCE.match(line)
        or _HEADING.match(line)
        or _RULE.match(line)
        or _BULLET.match(line)
        or _NUMBER.match(line)
        or _QUOTE.match(line)
        or ("|" in line and nxt is not None and _TABLE_SEP.match(nxt) and "-" in nxt)
    )


def markdown_html(text: str) -> str:
    """The Markdown subset of `text` as safe HTML (see the module doc)."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[str] = []
    i, n = 0, len(lines)

    def take(pred: Callable[[str], object]) -> list[str]:
        nonlocal i
        got = []
        while i < n and pred(lines[i]):
            got.append(lines[i])
            i += 1
        return got

    def not_fence(mark: str) -> Callable[[str], bool]:
        return lambda s: not s.strip().startswith(mark)

    def matching(pattern: re.Pattern[str]) -> Callable[[str], object]:
        return pattern.match

    while i < n:
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < n else None
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            i += 1
            code = take(not_fence(fence.group(1)))
            i += 1  # the closing fence (or the end of a text still streaming)
            out.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
            continue
        heading = _HEADING.match(line)
        if heading:
            tag = _HEAD_TAG.get(len(heading.group(1)), "h6")
            out.append(f"<{tag}>{inline_html(heading.group(2))}</{tag}>")
            i += 1
            continue
        if _RULE.match(line):
            out.append("<hr>")
            i += 1
            continue
        if "|" in line and nxt is not None and _TABLE_SEP.match(nxt) and "-" in nxt:
            out.append(_table(take(lambda s: bool(s.strip()) and "|" in s)))
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBER, "ol")):
            if pattern.match(line):
                items = take(matching(pattern))
                lis = "".join(
                    f"<li>{inline_html(m.group(1))}</li>" for s in items if (m := pattern.match(s))
                )
                out.append(f"<{tag}>{lis}</{tag}>")
                break
        else:
            if _QUOTE.match(line):
                quoted = [m.group(1) for s in take(_QUOTE.match) if (m := _QUOTE.match(s))]
                out.append(f"<blockquote>{markdown_html(chr(10).join(quoted))}</blockquote>")
                continue
            para = [line]
            i += 1
            while i < n and lines[i].strip():
                if _starts_block(lines[i], lines[i + 1] if i + 1 < n else None):
                    break
                para.append(lines[i])
                i += 1
            out.append("<p>" + "<br>".join(inline_html(p) for p in para) + "</p>")
    return "".join(out)


def looks_like_markdown(text: str) -> bool:
    """True when a multi-line string reads as Markdown (headings, tables, lists, emphasis)."""
    lines = text.split("\n")
    for k, line in enumerate(lines):
        nxt = lines[k + 1] if k + 1 < len(lines) else None
        if _HEADING.match(line) or _FENCE.match(line) or _BULLET.match(line):
            return True
        if "|" in line and nxt is not None and _TABLE_SEP.match(nxt) and "-" in nxt:
            return True
    return bool(re.search(r"\*\*\S.*?\S\*\*|\[[^\]]+\]\(https?://", text))
