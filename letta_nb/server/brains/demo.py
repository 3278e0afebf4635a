"""``letta_nb/demo``: a deterministic, offline stand-in for an LLM, playing a data analyst.

It needs no network and no key, and the same input (and agent workdir) always yields the same
events, so tutorials and tests can script exact runs. It reasons in a few short deltas, calls
the real pandas tools of :mod:`letta_nb.server.brains.tools` over the bundled coffee-sales
dataset, and streams answers word by word (``"Revenue"``, ``" by"``, ``" region"``...), citing
the numbers the tools returned.

Directives (exact; also in ``DIRECTIVES``). Frame counts are the stored frames of a background
run with ``stream_tokens=true`` on the embedded server: the initial ping, one frame per
reasoning/assistant delta, the tool frames, then ``stop_reason`` + ``usage_statistics`` +
``[DONE]`` (keepalive pings are not stored and not counted). The runner streams a tool call
or approval request like Letta does: a name frame plus 8-character argument fragments, i.e.
``1 + ceil(len(json.dumps(arguments)) / 8)`` frames (``ARG_CHUNK`` in ``runner.py``).

* ``/long N [DELAY_MS]``: an answer of exactly N assistant deltas and nothing else (no
  reasoning): ``long_token(i)`` for i = 1..N, i.e. ``"token1"``, ``" token2"``, ... ,
  ``" tokenN"``; with DELAY_MS > 0 a ``Sleep(DELAY_MS / 1000)`` between consecutive tokens
  (N - 1 sleeps). Generated lazily, so N = 1,000,000 costs no memory. Frames: N + 4.
* ``/tool``: 4 reasoning deltas, ``group_stats(by="region", metric="revenue", agg="sum")``
  (50 characters of arguments: 8 tool_call frames), its tool_return, then (a new step) a
  21-delta answer quoting the returned sums and shares. Frames: 1 + 4 + 8 + 1 + 21 + 3 = 38.
* ``/gated``: 6 reasoning deltas, then ``write_report`` (approval-gated) with a report drafted
  from the data; the run ends with ``requires_approval``. Frames: 1 + 6 + A + 3, where A
  is the approval_request frame count above (the arguments are ``title`` and ``body`` only:
  the runner supplies the workdir, so the count does not depend on where the server runs).
  The follow-up run calls ``resume_after_approval``: approved, it
  confirms the written file (``reports/coffee-sales-summary.md`` in the agent's workdir):
  ping + tool_return + 16 deltas + 3 = 21 frames; denied, it says nothing was written and
  quotes the user's reason (the runner sends ``"Error: request to call tool denied. User
  reason: <reason>"``; without a reason the answer says none was given).
* ``/fail``: 1 reasoning delta, then ``Fail("llm_error", ...)``: the run fails with
  ``llm_api_error``. Frames: ping + 1 + stop_reason + error = 4 (no usage, no [DONE]).
* ``/silent S``: one ``Sleep(S)`` (S seconds, float), then a 6-delta answer
  (``"Back after S seconds of silence."`` with S as typed). Frames: 1 + 6 + 3 = 10.
* ``/recall``: what this history (the agent's own, or one conversation's) holds: how many
  earlier user messages, and the last three of them, quoted. A conversation sees only its own.

A malformed directive gets a short usage answer. A greeting (``hi``, ``hello``, ``help``...)
gets a short intro listing the directives. Any other text is routed by keywords to one tool:
"report" → group_stats then write_report (gated); "correlat"/"relationship" → correlation;
"trend"/"month"/"week"/"quarter"/"over time"/"season" → trend; "top"/"best"/"most"/"highest"
→ top_n; a column word ("region", "store", "category", "product") → group_stats; "rating"/
"price"/"units"/"revenue" alone → column_summary; otherwise describe_dataset. A value of the
data written as in the data ("Airport", "Old Town", "East", "Latte", "Bakery") restricts
top_n, group_stats, trend and column_summary to those rows (their ``where`` argument), so a
question per row of a table gets its own answer ("Which product sells the most at the Airport
store?"). The answer then cites the computed numbers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from letta_nb.server.brains import tools as t
from letta_nb.server.brains.base import (
    Assistant,
    Fail,
    Reasoning,
    Sleep,
    Tool,
    ToolCall,
    ToolResult,
    Turn,
    TurnContext,
)

HANDLE = "letta_nb/demo"
GATED_REPORT_TITLE = "Coffee sales summary"
LONG_MAX_TOKENS = 10_000_000
DENIAL_MARKER = "User reason:"

DIRECTIVES: Mapping[str, str] = {
    "/long N [DELAY_MS]": (
        "Answer with exactly N tokens ('token1', ' token2', ... ' tokenN'), DELAY_MS "
        "milliseconds apart (default 0), no reasoning. Stored frames: N + 4."
    ),
    "/tool": (
        "Multi-step run: reasoning, a group_stats tool call (revenue by region), its real "
        "return, then a 21-token answer quoting the numbers. Stored frames: 38."
    ),
    "/gated": (
        "Reasoning, then a call of the approval-gated write_report tool: the run stops with "
        "requires_approval. Approve to write "
        "reports/coffee-sales-summary.md, or deny with a reason."
    ),
    "/fail": (
        "One reasoning delta, then a model failure: stop_reason llm_api_error, an error "
        "frame, run failed. Stored frames: 4."
    ),
    "/silent S": (
        "S seconds (float) with no output (keepalive pings only), then a 6-token answer. "
        "Stored frames: 10."
    ),
    "/recall": (
        "What this history remembers: how many earlier messages you sent here and the last "
        "three (a conversation sees only its own)."
    ),
}

_GREETING = re.compile(
    r"^\s*(hi|hello|hey|hiya|howdy|yo|greetings|good (morning|afternoon|evening)|help|"
    r"what can you do|who are you)\b[\s!.?]*",
    re.IGNORECASE,
)
_PIECE = re.compile(r"\s*\S+")
_METRIC_WORDS = (  # longest first so "unit price" wins over "unit"
    ("customer rating", "customer_rating"),
    ("unit price", "unit_price"),
    ("unit_price", "unit_price"),
    ("customer_rating", "customer_rating"),
    ("satisf", "customer_rating"),
    ("rating", "customer_rating"),
    ("price", "unit_price"),
    ("revenue", "revenue"),
    ("income", "revenue"),
    ("sales", "revenue"),
    ("quantity", "units"),
    ("volume", "units"),
    ("units", "units"),
    ("unit", "units"),
    ("sold", "units"),
)
_DIMENSION_WORDS = (  # longest first so "product category" wins over "product"
    ("product categor", "category"),
    ("region", "region"),
    ("store", "store"),
    ("shop", "store"),
    ("location", "store"),
    ("categor", "category"),
    ("product", "product"),
    ("item", "product"),
    ("drink", "product"),
)


#: How a filter reads in an answer ("at the Airport store", "in the East region", "for Latte").
_SCOPE_PHRASES = {
    "store": "at the {} store",
    "region": "in the {} region",
    "category": "in the {} category",
    "product": "for {}",
}
#: Tools that take a ``where`` filter, and the argument naming the column they rank or group
#: (a filter on that very column would leave one group, so it is not applied).
_FILTERED_TOOLS = {"top_n": "column", "group_stats": "by", "trend": None, "column_summary": None}


def long_token(i: int) -> str:
    """The i-th token (1-based) of a ``/long`` answer: ``"token1"``, then ``" token<i>"``."""
    return "token1" if i == 1 else f" token{i}"


def pieces(text: str) -> list[str]:
    """Split text into LLM-like deltas: words with their leading whitespace attached."""
    return _PIECE.findall(text)


def _say(text: str) -> Turn:
    for piece in pieces(text):
        yield Assistant(piece)


def _think(text: str, words_per_delta: int = 4) -> Turn:
    parts = pieces(text)
    for start in range(0, len(parts), words_per_delta):
        yield Reasoning("".join(parts[start : start + words_per_delta]))


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _fmt(metric: str, value: Any, agg: str = "sum") -> str:
    """A metric value the way an analyst would write it."""
    if value is None:
        return "n/a"
    if agg == "count":
        return f"{int(value):,} rows"
    if metric in ("revenue", "unit_price"):
        return _money(float(value))
    if metric == "units":
        return f"{value:,.2f} units" if agg == "mean" else f"{round(value):,} units"
    return f"{float(value):.2f}"


def _label(metric: str) -> str:
    return metric.replace("_", " ")


def _parse_return(result: ToolResult | None) -> dict[str, Any] | None:
    if result is None or result.status != "success":
        return None
    try:
        data = json.loads(result.tool_return)
    except (TypeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _failure_text(name: str, result: ToolResult | None) -> str:
    if result is None:
        return f"I did not get a result back from {name}, so I cannot answer with numbers."
    return f"The {name} call failed: {result.tool_return.strip()}"


def _mentions(text: str, words: tuple[tuple[str, str], ...]) -> list[str]:
    """Columns named in ``text``, in order of first appearance, without overlapping matches."""
    lowered = text.lower()
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, str]] = []
    for word, column in words:
        for match in re.finditer(re.escape(word), lowered):
            span = (match.start(), match.end())
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            taken.append(span)
            found.append((span[0], column))
    ordered: list[str] = []
    for _, column in sorted(found):
        if column not in ordered:
            ordered.append(column)
    return ordered


@lru_cache(maxsize=1)
def _value_words() -> tuple[tuple[str, str], ...]:
    """Every value of the dataset's category columns, longest first ("Drip Coffee" before
    "Coffee"), as (value, column)."""
    df = t.load_sales()
    pairs = {(str(v), c) for c in t.CATEGORICAL for v in df[c].unique()}
    return tuple(sorted(pairs, key=lambda p: (-len(p[0]), p[0], p[1])))


def _named_values(text: str) -> dict[str, str]:
    """Dataset values written as in the data ("Airport", "Old Town", "East", "Latte"): the
    rows a question is about, column -> value (the first mention per column wins)."""
    taken: list[tuple[int, int]] = []
    found: list[tuple[int, str, str]] = []
    for value, column in _value_words():
        for match in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text):
            span = (match.start(), match.end())
            if any(span[0] < end and start < span[1] for start, end in taken):
                continue
            taken.append(span)
            found.append((span[0], column, value))
    named: dict[str, str] = {}
    for _, column, value in sorted(found):
        named.setdefault(column, value)
    return named


def _scope(d: Mapping[str, Any]) -> str:
    """The rows a tool return covers, as words ("at the Airport store"), or ""."""
    where = d.get("where") or {}
    return " ".join(_SCOPE_PHRASES[c].format(v) for c, v in where.items() if c in _SCOPE_PHRASES)


def _scoped_lead(d: Mapping[str, Any], sentence: str) -> str:
    """``sentence`` introduced by its scope: "At the Airport store, Latte sells the most"."""
    scope = _scope(d)
    if not scope:
        return sentence
    return f"{scope[0].upper()}{scope[1:]}, {sentence}"


def _with_filter(
    name: str, args: dict[str, Any], why: str, named: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """A tool call restricted to the rows the question names (when the tool takes a filter)."""
    if name not in _FILTERED_TOOLS or not named:
        return args, why
    ranked = _FILTERED_TOOLS[name]
    where = {c: v for c, v in named.items() if ranked is None or args.get(ranked) != c}
    if name == "column_summary":
        where.pop(args.get("column", ""), None)
    if not where:
        return args, why
    return {**args, "where": where}, f"{why} {_scope({'where': where})}"


def _call_text(name: str, args: Mapping[str, Any]) -> str:
    """`top_n(column=product, n=5, by=revenue, where={"store": "Airport"})`."""
    shown = (f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in args.items())
    return f"{name}({', '.join(shown)})"


# ---- answers rendered from tool returns -------------------------------------------------


def _render_describe(d: dict[str, Any]) -> str:
    return (
        f"The {d['dataset']} dataset has {d['rows']:,} rows from {d['date_from']} to "
        f"{d['date_to']}: {d['stores']} stores in {d['regions']} regions selling "
        f"{d['products']} products in {d['categories']} categories. Total revenue is "
        f"{_money(d['total_revenue'])} from {d['total_units']:,} units, and the mean customer "
        f"rating is {d['mean_rating']:.2f}. Ask me for top products, a monthly trend, revenue "
        f"by region or a correlation."
    )


def _render_column(d: dict[str, Any]) -> str:
    name = d["column"]
    scope = _scope(d)
    if scope:
        text = _render_column({k: v for k, v in d.items() if k != "where"})
        return f"{scope[0].upper()}{scope[1:]}, {text[0].lower()}{text[1:]}"
    if d["kind"] == "numeric":
        return (
            f"{_label(name).capitalize()} ranges from {_fmt(name, d['min'])} to "
            f"{_fmt(name, d['max'])} over {d['count']:,} rows, with a mean of "
            f"{_fmt(name, d['mean'], 'mean')} (median {_fmt(name, d['median'], 'mean')}, "
            f"standard deviation {d['std']}). Half of the rows lie between "
            f"{_fmt(name, d['p25'], 'mean')} and {_fmt(name, d['p75'], 'mean')}."
        )
    if d["kind"] == "date":
        return (
            f"The data runs from {d['min']} to {d['max']}, with sales on "
            f"{d['distinct_days']} distinct days ({d['count']:,} rows)."
        )
    top = ", ".join(f"{row['value']} ({row['rows']} rows)" for row in d["top"])
    return f"{_label(name).capitalize()} has {d['unique']} distinct values; most frequent: {top}."


def _render_groups(d: dict[str, Any]) -> str:
    by, metric, agg = d["by"], d["metric"], d["agg"]
    key = f"{metric}_{agg}"
    groups = d["groups"]
    additive = agg in ("sum", "count") and d["overall"]
    parts = []
    for row in groups:
        text = f"{row[by]} {_fmt(metric, row[key], agg)}"
        if additive:
            text += f" ({100.0 * row[key] / d['overall']:.1f}%)"
        parts.append(text)
    first, last = groups[0], groups[-1]
    overall = "in total" if additive else "overall"
    return (
        f"{_label(metric).capitalize()} ({agg}) by {by}: {', '.join(parts)}. "
        f"{first[by]} leads and {last[by]} trails; {_fmt(metric, d['overall'], agg)} {overall}."
    )


def _render_top(d: dict[str, Any]) -> str:
    column, by, agg = d["column"], d["by"], d["agg"]
    key = f"{by}_{agg}"
    items = []
    for row in d["top"]:
        text = f"{row['rank']}. {row[column]} {_fmt(by, row[key], agg)}"
        if "share_pct" in row:
            text += f" ({row['share_pct']:.1f}%)"
        items.append(text)
    head = (
        f"Top {d['n']} {column} values by {'total' if agg == 'sum' else 'average'} "
        f"{_label(by)}: {'; '.join(items)}."
    )
    if "total" in d:
        share = sum(row["share_pct"] for row in d["top"])
        return f"{head} Together they make {share:.1f}% of the {_fmt(by, d['total'])} total."
    return f"{head} The overall average is {_fmt(by, d['overall_mean'], 'mean')}."


def _render_trend(d: dict[str, Any]) -> str:
    metric, agg, freq = d["metric"], d["agg"], d["freq"]
    first, last, peak, low = d["first"], d["last"], d["peak"], d["low"]
    change = d["change_pct"]
    direction = "up" if change is not None and change > 0 else "down"
    moved = f" ({direction} {abs(change):.1f}%)" if change is not None else ""
    return (
        f"Per {freq}, {_label(metric)} ({agg}) went from {_fmt(metric, first['value'], agg)} in "
        f"{first['period']} to {_fmt(metric, last['value'], agg)} in {last['period']}{moved} "
        f"across {len(d['periods'])} periods. The peak was {peak['period']} at "
        f"{_fmt(metric, peak['value'], agg)} and the low {low['period']} at "
        f"{_fmt(metric, low['value'], agg)}."
    )


def _render_correlation(d: dict[str, Any]) -> str:
    a, b, r = _label(d["a"]), _label(d["b"]), d["r"]
    text = (
        f"The {d['method'].capitalize()} correlation between {a} and {b} is {r:.3f} over "
        f"{d['n']} rows: a {d['strength']} relationship."
    )
    if d["strength"] != "negligible":
        text += f" When {a} is higher, {b} tends to be {'higher' if r > 0 else 'lower'}."
    return text


_RENDERERS = {
    "describe_dataset": _render_describe,
    "column_summary": _render_column,
    "group_stats": _render_groups,
    "top_n": _render_top,
    "trend": _render_trend,
    "correlation": _render_correlation,
}


# ---- answers in natural sentences (free-text questions) ---------------------------------

_MONTHS = [
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
]


def _period(label: str, freq: str) -> str:
    """`2024-07` → `July 2024`; weeks and quarters as the tool names them."""
    if freq == "month" and re.fullmatch(r"\d{4}-\d{2}", label):
        year, month = label.split("-")
        return f"{_MONTHS[int(month) - 1]} {year}"
    if freq == "week" and "/" in label:
        return f"the week of {label.split('/')[0]}"
    return label


def _series(parts: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def _what(metric: str, agg: str) -> str:
    if agg == "mean":
        return f"average {_label(metric)}"
    if agg == "count":
        return "number of sales"
    if agg == "median":
        return f"median {_label(metric)}"
    return "revenue" if metric == "revenue" else f"total {_label(metric)}"


def _natural_top(d: dict[str, Any], question: str) -> str:
    column, by, agg = d["column"], d["by"], d["agg"]
    key = f"{by}_{agg}"
    rows = d["top"]
    first = rows[0]
    share = f", {first['share_pct']:.1f}% of the total" if "share_pct" in first else ""
    verb = "sells the most" if by in ("revenue", "units") else "ranks highest"
    lead = (
        f"{first[column]} {verb}: {_fmt(by, first[key], agg)} of {_what(by, agg)}{share}."
        if by in ("revenue", "units")
        else f"{first[column]} ranks highest on {_what(by, agg)} ({_fmt(by, first[key], agg)})."
    )
    lead = _scoped_lead(d, lead)
    rest = [f"{r[column]} ({_fmt(by, r[key], agg)})" for r in rows[1:4]]
    if not rest:
        return lead
    tail = f"It is followed by {_series(rest)}"
    if len(rows) > 4:
        tail += f", among the top {len(rows)}"
    return f"{lead} {tail}."


def _natural_groups(d: dict[str, Any], question: str) -> str:
    by, metric, agg = d["by"], d["metric"], d["agg"]
    key = f"{metric}_{agg}"
    groups = d["groups"]
    additive = agg in ("sum", "count") and d["overall"]
    what = _what(metric, agg)

    def value(row: dict[str, Any]) -> str:
        text = _fmt(metric, row[key], agg)
        return f"{text} ({100.0 * row[key] / d['overall']:.1f}%)" if additive else text

    first, last = groups[0], groups[-1]
    text = _scoped_lead(d, f"{first[by]} has the highest {what}: {value(first)}.")
    middle = [f"{row[by]} with {value(row)}" for row in groups[1:-1]]
    if middle:
        text += f" {_series(middle)} {'comes' if len(middle) == 1 else 'come'} next."
    if len(groups) > 1:
        text += f" {last[by]} is lowest at {value(last)}."
    overall = "Altogether that is" if additive else "The overall figure is"
    return f"{text} {overall} {_fmt(metric, d['overall'], agg)}."


def _halves(periods: list[dict[str, Any]]) -> tuple[float, float] | None:
    values = [p["value"] for p in periods if p.get("value") is not None]
    if len(values) < 4:
        return None
    mid = len(values) // 2
    return sum(values[:mid]) / mid, sum(values[mid:]) / (len(values) - mid)


def _natural_trend(d: dict[str, Any], question: str) -> str:
    metric, agg, freq = d["metric"], d["agg"], d["freq"]
    first, last, peak, low = d["first"], d["last"], d["peak"], d["low"]
    change = d["change_pct"]
    what = _what(metric, agg)
    halves = _halves(d["periods"])
    rising = change is not None and change > 0
    if halves is not None:
        rising = halves[1] > halves[0] if change is None else rising and halves[1] >= halves[0]
    asks = re.search(
        r"\b(going up|up|rising|growing|increasing|improving|down|declining)\b", question
    )
    verdict = ""
    if asks:
        verdict = "Yes, it is going up" if rising else "No, it is not going up"
        if asks.group(1) in ("down", "declining"):
            verdict = "No, it is going up" if rising else "Yes, it is going down"
    scope = _scope(d)
    where = f" {scope}" if scope else ""
    if not asks:
        verdict = f"{what.capitalize()} is trending {'up' if rising else 'down'}"
    moved = f" ({change:+.1f}%)" if change is not None else ""
    text = (
        f"{verdict}: {what} per {freq}{where} went from {_fmt(metric, first['value'], agg)} in "
        f"{_period(first['period'], freq)} to {_fmt(metric, last['value'], agg)} in "
        f"{_period(last['period'], freq)}{moved}."
    )
    if halves is not None:
        text += (
            f" The second half averaged {_fmt(metric, halves[1], agg)} a {freq}, against "
            f"{_fmt(metric, halves[0], agg)} in the first."
        )
    return (
        f"{text} The best {freq} was {_period(peak['period'], freq)} "
        f"({_fmt(metric, peak['value'], agg)}), the weakest {_period(low['period'], freq)} "
        f"({_fmt(metric, low['value'], agg)})."
    )


def _natural_correlation(d: dict[str, Any], question: str) -> str:
    a, b, r = _label(d["a"]), _label(d["b"]), d["r"]
    strength = d["strength"]
    if strength == "negligible":
        head = f"{a.capitalize()} and {b} are barely related"
    else:
        head = f"{a.capitalize()} and {b} have a {strength} relationship"
    text = f"{head} ({d['method'].capitalize()} r = {r:.3f} over {d['n']} rows)."
    if strength != "negligible":
        text += f" When {a} goes up, {b} tends to go {'up' if r > 0 else 'down'}."
    return text


_NATURAL: dict[str, Any] = {
    "describe_dataset": lambda d, _q: _render_describe(d),
    "column_summary": lambda d, _q: _render_column(d),
    "top_n": _natural_top,
    "group_stats": _natural_groups,
    "trend": _natural_trend,
    "correlation": _natural_correlation,
}


def _report_body(groups: dict[str, Any], dataset: dict[str, Any]) -> str:
    """Markdown for a report, built only from tool outputs (what an LLM would have seen)."""
    by, metric, agg = groups["by"], groups["metric"], groups["agg"]
    key = f"{metric}_{agg}"
    lines = [
        f"Source: {dataset['dataset']} ({dataset['rows']} rows, {dataset['date_from']} to "
        f"{dataset['date_to']}). Total revenue {_money(dataset['total_revenue'])}, "
        f"{dataset['total_units']:,} units, mean rating {dataset['mean_rating']:.2f}.",
        "",
        f"| {by} | {_label(metric)} ({agg}) |",
        "|---|---:|",
        *(f"| {row[by]} | {_fmt(metric, row[key], agg)} |" for row in groups["groups"]),
    ]
    return "\n".join(lines)


# ---- the brain --------------------------------------------------------------------------


class DemoBrain:
    """The default model of the embedded server: see the module docstring for its behaviour."""

    handle: str = HANDLE
    tools: Mapping[str, Tool] = t.TOOLS
    approval_required: frozenset[str] = frozenset({"write_report"})

    def respond(self, ctx: TurnContext, user_text: str) -> Turn:
        # Returns the chosen generator instead of delegating with ``yield from``, so a
        # /long run of a million tokens pays for one generator frame per token, not three.
        text = user_text.strip()
        if text.startswith("/"):
            return self._directive(ctx, text)
        if not text or (_GREETING.match(text) and _is_small_talk(text)):
            return _say(_intro())
        return self._analyse(ctx, text)

    def resume_after_approval(self, ctx: TurnContext, result: ToolResult) -> Turn:
        if result.status == "success":
            yield from _say(_approved_text(ctx, result))
            return
        reason = _denial_reason(result.tool_return)
        if reason is None:
            yield from _say(f"The {result.name} call failed: {result.tool_return.strip()}")
        elif reason:
            yield from _say(
                f"Understood, I did not run {result.name}, so nothing was written. "
                f'Your reason: "{reason}"'
            )
        else:
            yield from _say(
                f"Understood, I did not run {result.name}, so nothing was written. "
                "No reason was given."
            )

    # -- directives --

    def _directive(self, ctx: TurnContext, text: str) -> Turn:
        command, *args = text.split()
        command = command.lower()
        if command == "/long":
            parsed = _parse_long(args)
            if parsed is None:
                return _say(_usage("/long N [DELAY_MS]", "N is 1..10,000,000"))
            return _long(*parsed)
        if command == "/tool" and not args:
            return self._tool_directive()
        if command == "/gated" and not args:
            return self._gated(ctx)
        if command == "/fail" and not args:
            return _fail()
        if command == "/recall" and not args:
            return _recall(ctx)
        if command == "/silent":
            seconds = _parse_seconds(args)
            if seconds is None:
                return _say(_usage("/silent S", "S is seconds, 0..86400"))
            return _silent(seconds, args[0])
        known = ", ".join(DIRECTIVES)
        return _say(f"Unknown or malformed directive {command!r}. Known: {known}.")

    def _tool_directive(self) -> Turn:
        args = {"by": "region", "metric": "revenue", "agg": "sum"}
        yield from _think(
            "The /tool directive wants a multi-step run. I will total revenue per region "
            "with group_stats."
        )
        result = yield ToolCall("group_stats", args)
        yield from _say(_answer("group_stats", result))

    def _gated(self, ctx: TurnContext) -> Turn:
        yield from _think(
            "The /gated directive wants the approval-gated tool. I will draft a short sales "
            "summary and ask to save it with write_report."
        )
        groups = json.loads(t.group_stats("region", "revenue", "sum"))
        dataset = json.loads(t.describe_dataset())
        yield _write_report_call(ctx, GATED_REPORT_TITLE, _report_body(groups, dataset))

    # -- free text --

    def _analyse(self, ctx: TurnContext, text: str) -> Turn:
        lowered = text.lower()
        metrics = _mentions(text, _METRIC_WORDS)
        dimensions = _mentions(text, _DIMENSION_WORDS)
        if "report" in lowered:
            yield from self._report(ctx, dimensions, metrics)
            return
        plans = _plan(text, metrics, dimensions)
        calls = [_call_text(name, args) for name, args, _, _ in plans]
        if len(plans) == 1:
            why = plans[0][2]
            thought = f"The question is about {why}. I will call {calls[0]} and cite it."
        else:
            topics = _series([why for _, _, why, _ in plans])
            thought = (
                f"The question asks {len(plans)} things: {topics}. I will call "
                f"{_series(calls)} and answer each part."
            )
        yield from _think(thought)
        answers = []
        for name, args, _why, clause in plans:
            result = yield ToolCall(name, args)
            data = _parse_return(result)
            answers.append(
                _failure_text(name, result) if data is None else _NATURAL[name](data, clause)
            )
        yield from _say(" ".join(answers))

    def _report(self, ctx: TurnContext, dimensions: list[str], metrics: list[str]) -> Turn:
        by = dimensions[0] if dimensions else "store"
        metric = metrics[0] if metrics else "revenue"
        agg = "mean" if metric in t.MEAN_METRICS else "sum"
        yield from _think(
            f"A report is requested. I will compute {_label(metric)} by {by}, then save it "
            "with write_report, which needs approval."
        )
        result = yield ToolCall("group_stats", {"by": by, "metric": metric, "agg": agg})
        groups = _parse_return(result)
        if groups is None:
            yield from _say(_failure_text("group_stats", result))
            return
        dataset = json.loads(t.describe_dataset())
        title = f"{_label(metric).capitalize()} by {by}"
        yield from _say(
            f"I drafted a report on {_label(metric)} by {by}; saving it as "
            f"reports/{t.report_filename(title)} needs your approval."
        )
        yield _write_report_call(ctx, title, _report_body(groups, dataset))


#: Where one question ends and the next begins: "?", ";", a sentence end, or "and" before a
#: new question word ("Which region sells the most, and is the trend going up?").
_CLAUSE = re.compile(
    r"\?+|;|\.\s+|,?\s+\band\s+(?=(?:is|are|was|were|what|which|how|does|do|did|who|when|"
    r"where|why|has|have|can|could|should|will)\b)",
    re.IGNORECASE,
)


def _plan(
    text: str, metrics: list[str], dimensions: list[str]
) -> list[tuple[str, dict[str, Any], str, str]]:
    """One tool call per part of a compound question: (name, arguments, topic, the part).

    A part names its own metric / column (and rows: "at the Airport store"), else inherits the
    question's; parts without a topic of their own and repeated calls are dropped.
    """
    parts = [p.strip() for p in _CLAUSE.split(text) if p and p.strip()]
    named = _named_values(text)
    plans: list[tuple[str, dict[str, Any], str, str]] = []
    for part in parts:
        m = _mentions(part, _METRIC_WORDS) or metrics
        d = _mentions(part, _DIMENSION_WORDS) or dimensions
        name, args, why = _choose_tool(part.lower(), m, d)
        if name == "describe_dataset" and len(parts) > 1:
            continue
        args, why = _with_filter(name, args, why, _named_values(part) or named)
        if all((name, args) != (n, a) for n, a, _, _ in plans):
            plans.append((name, args, why, part.lower()))
    if not plans:
        name, args, why = _choose_tool(text.lower(), metrics, dimensions)
        args, why = _with_filter(name, args, why, named)
        plans.append((name, args, why, text.lower()))
    return plans


def _is_small_talk(text: str) -> bool:
    """True when a greeting asks nothing about the data ("hi, top products?" gets analysed)."""
    lowered = text.lower()
    if "report" in lowered:
        return False
    metrics, dimensions = _mentions(text, _METRIC_WORDS), _mentions(text, _DIMENSION_WORDS)
    return _choose_tool(lowered, metrics, dimensions)[0] == "describe_dataset"


def _choose_tool(
    lowered: str, metrics: list[str], dimensions: list[str]
) -> tuple[str, dict[str, Any], str]:
    """Keyword routing from a question to one tool call: (name, arguments, topic)."""
    if "correlat" in lowered or "relationship" in lowered or "related" in lowered:
        pair = [*metrics, *(c for c in ("units", "customer_rating") if c not in metrics)]
        return "correlation", {"a": pair[0], "b": pair[1]}, "how two numbers move together"
    trend_words = (
        *("trend", "month", "week", "quarter", "daily", "over time", "season"),
        *("going up", "going down", "rising", "growing", "declin", "increas", "decreas"),
    )
    if any(word in lowered for word in trend_words):
        freq = next(
            (
                f
                for f, w in (("week", "week"), ("quarter", "quarter"), ("day", "daily"))
                if w in lowered
            ),
            "month",
        )
        metric = metrics[0] if metrics else "revenue"
        return "trend", {"metric": metric, "freq": freq}, f"{_label(metric)} over time"
    if any(re.search(rf"\b{w}", lowered) for w in ("top", "best", "most", "highest", "lead")):
        column = dimensions[0] if dimensions else "product"
        metric = metrics[0] if metrics else "revenue"
        n = next((int(m) for m in re.findall(r"\b\d+\b", lowered) if 1 <= int(m) <= 20), 5)
        return (
            "top_n",
            {"column": column, "n": n, "by": metric},
            f"which {column} ranks highest",
        )
    if dimensions:
        metric = metrics[0] if metrics else "revenue"
        mean_words = ("average", "mean", "avg", "typical")
        if "median" in lowered:
            agg = "median"
        elif any(word in lowered for word in mean_words) or metric in t.MEAN_METRICS:
            agg = "mean"
        elif "how many" in lowered or "count" in lowered:
            agg = "count"
        else:
            agg = "sum"
        args = {"by": dimensions[0], "metric": metric, "agg": agg}
        return "group_stats", args, f"{_label(metric)} per {dimensions[0]}"
    if metrics:
        return "column_summary", {"column": metrics[0]}, f"the {_label(metrics[0])} column"
    return "describe_dataset", {}, "the dataset as a whole"


def _answer(name: str, result: ToolResult | None) -> str:
    data = _parse_return(result)
    if data is None:
        return _failure_text(name, result)
    return _RENDERERS[name](data)


def _write_report_call(ctx: TurnContext, title: str, body: str) -> ToolCall:
    # The runner passes the agent's workdir itself (``base.WORKDIR_PARAM``): the visible
    # arguments, and so the approval card and the frame count, hold no server path.
    return ToolCall("write_report", {"title": title, "body": body})


def _approved_text(ctx: TurnContext, result: ToolResult) -> str:
    data = _parse_return(result)
    if result.name != "write_report" or data is None:
        return f"Done: {result.name} returned {result.tool_return.strip()}"
    relative = data["relative_path"]
    if not (ctx.workdir / relative).is_file():
        return f"write_report reported {relative}, but the file is missing from the workdir."
    return (
        f'Done: the report "{data["title"]}" is saved as {relative} in the agent\'s folder '
        f"({data['bytes']:,} bytes)."
    )


def _denial_reason(tool_return: str) -> str | None:
    """The user's reason from a denial text, "" if none was given, None if not a denial."""
    if "denied" not in tool_return.lower():
        return None
    _, marker, reason = tool_return.partition(DENIAL_MARKER)
    reason = reason.strip()
    if not marker or reason in ("", "None", "null"):
        return ""
    return reason


def _fail() -> Turn:
    yield Reasoning("Calling the model provider for this turn.")
    yield Fail("llm_error", "Simulated upstream LLM failure requested with /fail.")


def _silent(seconds: float, as_typed: str) -> Turn:
    yield Sleep(seconds)
    yield from _say(f"Back after {as_typed} seconds of silence.")


def _recall(ctx: TurnContext) -> Turn:
    said = [str(m.get("content", "")) for m in ctx.history if m.get("role") == "user"]
    if not said:
        return _say("Nothing earlier: this is the first message here.")
    quoted = ", ".join(f'"{text}"' for text in said[-3:])
    many = "message" if len(said) == 1 else "messages"
    last = "it was" if len(said) == 1 else "they were" if len(said) <= 3 else "the last 3:"
    return _say(f"You sent {len(said)} earlier {many} here; {last} {quoted}.")


def _long(n: int, delay_ms: float) -> Turn:
    pause = Sleep(delay_ms / 1000.0) if delay_ms > 0 else None
    yield Assistant(long_token(1))
    for i in range(2, n + 1):
        if pause is not None:
            yield pause
        yield Assistant(f" token{i}")


def _parse_long(args: list[str]) -> tuple[int, float] | None:
    if not 1 <= len(args) <= 2:
        return None
    try:
        n = int(args[0].replace("_", "").replace(",", ""))
        delay = float(args[1]) if len(args) == 2 else 0.0
    except ValueError:
        return None
    if not 1 <= n <= LONG_MAX_TOKENS or not math.isfinite(delay) or not 0 <= delay <= 60_000:
        return None
    return n, delay


def _parse_seconds(args: list[str]) -> float | None:
    if len(args) != 1:
        return None
    try:
        seconds = float(args[0])
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= 86_400 else None


def _usage(syntax: str, rule: str) -> str:
    return f"Usage: {syntax} ({rule}). {DIRECTIVES[syntax]}"


def _intro() -> str:
    lines = [
        "Hi! I am letta_nb/demo, an offline demo model that analyses a bundled coffee-shop "
        "sales dataset with real pandas tools. Ask about top products, monthly trends, "
        "revenue by region or correlations, or ask for a report. Directives:",
        *(f"\n- {syntax}: {meaning}" for syntax, meaning in DIRECTIVES.items()),
    ]
    return "".join(lines)
