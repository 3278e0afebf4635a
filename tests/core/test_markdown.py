"""core.markdown: the safe Markdown subset of the static copy (the browser module renders the
same subset with DOM calls; tests/browser checks that side)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from letta_nb.core.markdown import looks_like_markdown, markdown_html, safe_href

ATTACKS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[data](data:text/html;base64,PHNjcmlwdD4=)",
    '<a href="javascript:alert(1)">x</a>',
    "**<svg onload=alert(1)>**",
    "| a |\n|---|\n| <iframe src=x> |",
    "```\n</code></pre><script>x</script>\n```",
]


ALLOWED = {
    "p", "br", "strong", "em", "code", "pre", "a", "h4", "h5", "h6", "ul", "ol", "li",
    "blockquote", "hr", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip


class Tags(HTMLParser):
    """Every tag and attribute the output really contains (what a browser would build)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, dict(attrs)))


def parse(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(markup)
    return parser.seen


@pytest.mark.parametrize("payload", ATTACKS)
def test_model_html_never_becomes_markup(payload: str) -> None:
    for tag, attrs in parse(markdown_html(payload)):
        assert tag in ALLOWED, (tag, payload)
        assert set(attrs) <= {"href", "target", "rel", "style"}, attrs
        assert not any(k.startswith("on") for k in attrs)
        href = attrs.get("href")
        assert href is None or href.startswith(("https://", "http://", "mailto:"))


def test_only_safe_schemes_become_links() -> None:
    assert safe_href("https://example.com/x") == "https://example.com/x"
    assert safe_href("mailto:a@b.c") == "mailto:a@b.c"
    for bad in (
        "javascript:alert(1)",
        " JavaScript:x",
        "data:text/html,x",
        "/lab/tree",
        "vbscript:x",
    ):
        assert safe_href(bad) is None
    out = markdown_html("[docs](https://docs.letta.com) and [bad](javascript:alert(1))")
    assert (
        '<a href="https://docs.letta.com" target="_blank" rel="noopener noreferrer">docs</a>' in out
    )
    assert "[bad](javascript:alert(1))" in out  # shown as text


def test_the_report_body_reads_as_a_table() -> None:
    body = (
        "Source: coffee_sales (720 rows).\n\n"
        "| region | revenue (sum) |\n|---|---:|\n| East | $1,234.50 |\n| West | $99.00 |"
    )
    out = markdown_html(body)
    assert "<p>Source: coffee_sales (720 rows).</p>" in out
    assert (
        '<th style="text-align:left">region</th><th style="text-align:right">revenue (sum)' in out
    )
    assert '<td style="text-align:right">$1,234.50</td>' in out
    assert "|---|" not in out


def test_blocks_and_inline() -> None:
    out = markdown_html(
        "# Title\nline one\nline two\n\n- a **b**\n- `c` and *d*\n\n1. first\n2. second\n\n"
        "> quoted\n\n---\n```python\nx = 1 < 2\n```\nsnake_case_name stays"
    )
    assert "<h4>Title</h4>" in out
    assert "<p>line one<br>line two</p>" in out
    assert "<ul><li>a <strong>b</strong></li><li><code>c</code> and <em>d</em></li></ul>" in out
    assert "<ol><li>first</li><li>second</li></ol>" in out
    assert "<blockquote><p>quoted</p></blockquote>" in out and "<hr>" in out
    assert "<pre><code>x = 1 &lt; 2</code></pre>" in out
    assert "snake_case_name stays" in out  # no italics inside words


def test_an_unclosed_fence_while_streaming_still_escapes() -> None:
    assert markdown_html("```\n<b>partial") == "<pre><code>&lt;b&gt;partial</code></pre>"


def test_looks_like_markdown() -> None:
    assert looks_like_markdown("# Report\n\nbody")
    assert looks_like_markdown("x\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert looks_like_markdown("- one\n- two")
    assert not looks_like_markdown("line one\nline two")
