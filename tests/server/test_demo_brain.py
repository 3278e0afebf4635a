"""The demo brain and its tools, driven directly (no server): exact directives, real numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import tracemalloc
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest

from letta_nb.server.brains import tools
from letta_nb.server.brains.base import (
    Assistant,
    BrainEvent,
    Fail,
    Reasoning,
    Sleep,
    ToolCall,
    ToolResult,
    Turn,
    TurnContext,
    accepts_workdir,
)
from letta_nb.server.brains.demo import DIRECTIVES, DemoBrain, long_token

DENIAL = "Error: request to call tool denied. User reason: {}"

Trace = list[BrainEvent | ToolResult]


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    """An independent read of the shipped CSV, to recompute every number the tools return."""
    path = files("letta_nb.server.data").joinpath("coffee_sales.csv")
    with path.open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, parse_dates=["date"])


@pytest.fixture
def brain() -> DemoBrain:
    return DemoBrain()


@pytest.fixture
def ctx(tmp_path: Path) -> TurnContext:
    return TurnContext("agent-1", "demo", "run-1", tmp_path / "agent-1")


def run(brain: DemoBrain, turn: Turn) -> tuple[Trace, ToolCall | None]:
    """A tiny runner: executes tools, stops at a gated call (returned as pending)."""
    trace: Trace = []
    reply: ToolResult | None = None
    n_calls = 0
    while True:
        try:
            event = turn.send(reply)
        except StopIteration:
            return trace, None
        reply = None
        trace.append(event)
        if isinstance(event, ToolCall):
            if event.name in brain.approval_required:
                turn.close()
                return trace, event
            n_calls += 1
            reply = execute(brain, event, f"call-{n_calls}")
            trace.append(reply)


def execute(
    brain: DemoBrain, call: ToolCall, call_id: str = "call-x", *, workdir: Path | None = None
) -> ToolResult:
    """Run a tool as the runner does: a ``workdir`` parameter gets the agent's folder."""
    func = brain.tools[call.name]
    kwargs = dict(call.arguments)
    if accepts_workdir(func):
        assert workdir is not None, f"{call.name} needs the agent workdir"
        kwargs["workdir"] = str(workdir)
    try:
        text, status = func(**kwargs), "success"
    except ValueError as exc:
        text, status = f"Error: {exc}", "error"
    return ToolResult(call_id, call.name, status, text, dict(call.arguments))


def said(trace: Iterable[object]) -> str:
    return "".join(e.text for e in trace if isinstance(e, Assistant))


def kinds(trace: Iterable[object]) -> list[str]:
    return [type(e).__name__ for e in trace]


ARG_CHUNK = 8  # the runner streams tool-call arguments in 8-character fragments, as Letta does


def stored_frames(trace: Trace) -> int:
    """Frames a stream_tokens run stores: ping, one per delta / tool message, then the tail."""
    body = 0
    for event in trace:
        if isinstance(event, ToolCall):
            body += 1 + math.ceil(len(json.dumps(event.arguments)) / ARG_CHUNK)
        elif isinstance(event, Reasoning | Assistant | ToolResult):
            body += 1
    if any(isinstance(e, Fail) for e in trace):
        return 1 + body + 2  # stop_reason + error frame
    return 1 + body + 3  # stop_reason + usage + [DONE]


def money(value: float) -> str:
    return f"${value:,.2f}"


# ---- directives ---------------------------------------------------------------------------


def test_directives_are_the_documented_ones() -> None:
    assert list(DIRECTIVES) == [
        "/long N [DELAY_MS]",
        "/tool",
        "/gated",
        "/fail",
        "/silent S",
        "/recall",
    ]


def test_recall_quotes_only_this_history(brain: DemoBrain, ctx: TurnContext) -> None:
    assert said(run(brain, brain.respond(ctx, "/recall"))[0]) == (
        "Nothing earlier: this is the first message here."
    )
    history = tuple(
        {"role": role, "content": text}
        for text in ("a", "b", "c", "d")
        for role in ("user", "assistant")
    )
    later = dataclasses.replace(ctx, history=history)
    assert said(run(brain, brain.respond(later, "/recall"))[0]) == (
        'You sent 4 earlier messages here; the last 3: "b", "c", "d".'
    )


def test_long_exact_tokens_in_order(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, pending = run(brain, brain.respond(ctx, "/long 1000"))
    assert pending is None
    assert all(isinstance(e, Assistant) for e in trace)
    assert [e.text for e in trace] == [long_token(i) for i in range(1, 1001)]
    assert said(trace).split() == [f"token{i}" for i in range(1, 1001)]
    assert trace[0].text == "token1" and trace[1].text == " token2"
    assert stored_frames(trace) == 1000 + 4


def test_long_million_is_lazy(brain: DemoBrain, ctx: TurnContext) -> None:
    """Behaviour, not speed (the machine is shared): lazy start, constant memory."""
    assert next(brain.respond(ctx, "/long 10000000")) == Assistant("token1")  # lazy: O(1) start
    count, last = 0, None
    for event in brain.respond(ctx, "/long 1000000"):
        count += 1
        last = event
    assert count == 1_000_000 and last == Assistant(" token1000000")
    tracemalloc.start()
    try:
        for _ in brain.respond(ctx, "/long 100000"):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100_000  # nothing proportional to N is kept (100,000 tokens > 1 MB)


def test_long_delay_sleeps_between_tokens(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, _ = run(brain, brain.respond(ctx, "/long 4 250"))
    assert kinds(trace) == ["Assistant", "Sleep"] * 3 + ["Assistant"]
    assert {e.seconds for e in trace if isinstance(e, Sleep)} == {0.25}
    assert said(trace) == "token1 token2 token3 token4"


@pytest.mark.parametrize("text", ["/long", "/long x", "/long 0", "/long 5 -1", "/long 1 2 3"])
def test_long_bad_arguments_get_usage(brain: DemoBrain, ctx: TurnContext, text: str) -> None:
    trace, _ = run(brain, brain.respond(ctx, text))
    assert set(kinds(trace)) == {"Assistant"}
    assert said(trace).startswith("Usage: /long N [DELAY_MS]")


def test_tool_directive_is_multistep_with_real_numbers(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame
) -> None:
    trace, pending = run(brain, brain.respond(ctx, "/tool"))
    assert pending is None
    names = kinds(trace)
    call_at = names.index("ToolCall")
    assert set(names[:call_at]) == {"Reasoning"}
    assert names[call_at + 1] == "ToolResult"
    assert set(names[call_at + 2 :]) == {"Assistant"}
    call, result = trace[call_at], trace[call_at + 1]
    assert call == ToolCall("group_stats", {"by": "region", "metric": "revenue", "agg": "sum"})
    assert isinstance(result, ToolResult) and result.status == "success"
    expected = df.groupby("region")["revenue"].sum().sort_values(ascending=False)
    returned = json.loads(result.tool_return)
    assert [g["region"] for g in returned["groups"]] == list(expected.index)
    for group, value in zip(returned["groups"], expected, strict=True):
        assert group["revenue_sum"] == pytest.approx(value, abs=0.005)
    answer = said(trace)
    for region, value in expected.items():
        assert f"{region} {money(value)}" in answer
    assert money(df["revenue"].sum()) in answer
    assert stored_frames(trace) == 38
    assert kinds(trace).count("Assistant") == 21


def test_gated_has_no_effect_until_executed_then_confirms(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame
) -> None:
    trace, pending = run(brain, brain.respond(ctx, "/gated"))
    assert pending is not None and pending.name == "write_report"
    assert "write_report" in brain.approval_required
    assert set(kinds(trace[:-1])) == {"Reasoning"}
    assert kinds(trace).count("Reasoning") == 6
    request = 1 + math.ceil(len(json.dumps(pending.arguments)) / ARG_CHUNK)
    assert stored_frames(trace) == 1 + 6 + request + 3
    reports = ctx.workdir / "reports"
    assert not reports.exists()

    result = execute(brain, pending, workdir=ctx.workdir)
    assert result.status == "success"
    path = reports / "coffee-sales-summary.md"
    content = path.read_text(encoding="utf-8")
    assert content.startswith("# Coffee sales summary\n")
    for region, value in df.groupby("region")["revenue"].sum().items():
        assert f"| {region} | {money(value)} |" in content
    assert json.loads(result.tool_return)["bytes"] == len(content.encode())

    follow, again = run(brain, brain.resume_after_approval(ctx, result))
    assert again is None and set(kinds(follow)) == {"Assistant"}
    assert "reports/coffee-sales-summary.md" in said(follow)
    assert f"({len(content.encode()):,} bytes)" in said(follow)
    assert stored_frames([result, *follow]) == 21  # ping, tool_return, 16 deltas, tail


def test_denial_quotes_the_reason_and_writes_nothing(brain: DemoBrain, ctx: TurnContext) -> None:
    _, pending = run(brain, brain.respond(ctx, "/gated"))
    assert pending is not None
    reason = "not before  the Q3 review, please"
    denied = ToolResult("call-1", "write_report", "error", DENIAL.format(reason), pending.arguments)
    follow, _ = run(brain, brain.resume_after_approval(ctx, denied))
    answer = said(follow)
    assert f'"{reason}"' in answer
    assert "nothing was written" in answer
    assert not (ctx.workdir / "reports").exists()


def test_denial_without_reason(brain: DemoBrain, ctx: TurnContext) -> None:
    denied = ToolResult("call-1", "write_report", "error", DENIAL.format("None"))
    answer = said(run(brain, brain.resume_after_approval(ctx, denied))[0])
    assert "No reason was given." in answer


def test_fail_yields_llm_error(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, _ = run(brain, brain.respond(ctx, "/fail"))
    assert kinds(trace) == ["Reasoning", "Fail"]
    assert trace[-1].error_type == "llm_error"
    assert stored_frames(trace) == 4


@pytest.mark.parametrize(("arg", "seconds"), [("1.5", 1.5), ("0", 0.0), ("30", 30.0)])
def test_silent_sleeps_once_then_answers(
    brain: DemoBrain, ctx: TurnContext, arg: str, seconds: float
) -> None:
    trace, _ = run(brain, brain.respond(ctx, f"/silent {arg}"))
    assert trace[0] == Sleep(seconds)
    assert kinds(trace[1:]) == ["Assistant"] * 6
    assert said(trace) == f"Back after {arg} seconds of silence."
    assert stored_frames(trace) == 10


@pytest.mark.parametrize("text", ["/silent", "/silent soon", "/silent -1", "/silent nan"])
def test_silent_bad_arguments_get_usage(brain: DemoBrain, ctx: TurnContext, text: str) -> None:
    trace, _ = run(brain, brain.respond(ctx, text))
    assert "Sleep" not in kinds(trace)
    assert said(trace).startswith("Usage: /silent S")


def test_unknown_directive(brain: DemoBrain, ctx: TurnContext) -> None:
    assert "Unknown or malformed directive '/nope'" in said(
        run(brain, brain.respond(ctx, "/nope"))[0]
    )


@pytest.mark.parametrize(
    "text",
    ["/long 50", "/long 3 5", "/tool", "/gated", "/fail", "/silent 2", "hi", "top 3 stores"],
)
def test_same_input_same_events(brain: DemoBrain, ctx: TurnContext, text: str) -> None:
    assert run(brain, brain.respond(ctx, text)) == run(DemoBrain(), DemoBrain().respond(ctx, text))


def test_deltas_look_like_llm_tokens(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, _ = run(brain, brain.respond(ctx, "show the monthly revenue trend"))
    deltas = [e.text for e in trace if isinstance(e, Assistant)]
    assert len(deltas) > 10
    assert not deltas[0].startswith(" ")
    assert all(d.startswith(" ") and d.strip() and " " not in d.strip() for d in deltas[1:])
    assert 2 <= sum(isinstance(e, Reasoning) for e in trace) <= 8


def test_greeting_lists_directives(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, _ = run(brain, brain.respond(ctx, "Hello!"))
    assert set(kinds(trace)) == {"Assistant"}
    answer = said(trace)
    assert answer.startswith("Hi! I am letta_nb/demo")
    assert all(f"- {syntax}:" in answer for syntax in DIRECTIVES)


def test_greeting_with_a_question_is_analysed(brain: DemoBrain, ctx: TurnContext) -> None:
    trace, _ = run(brain, brain.respond(ctx, "help me find the top products"))
    assert [e.name for e in trace if isinstance(e, ToolCall)] == ["top_n"]


# ---- free text: keyword routing to real tools -----------------------------------------------


@pytest.mark.parametrize(
    ("question", "name", "arguments"),
    [
        (
            "What are the top 3 stores by rating?",
            "top_n",
            {"column": "store", "n": 3, "by": "customer_rating"},
        ),
        ("best products", "top_n", {"column": "product", "n": 5, "by": "revenue"}),
        ("show the monthly revenue trend", "trend", {"metric": "revenue", "freq": "month"}),
        ("weekly units over time", "trend", {"metric": "units", "freq": "week"}),
        ("is unit price correlated with units?", "correlation", {"a": "unit_price", "b": "units"}),
        ("any correlation here?", "correlation", {"a": "units", "b": "customer_rating"}),
        ("revenue by region", "group_stats", {"by": "region", "metric": "revenue", "agg": "sum"}),
        (
            "average units per category",
            "group_stats",
            {"by": "category", "metric": "units", "agg": "mean"},
        ),
        ("tell me about ratings", "column_summary", {"column": "customer_rating"}),
        ("what is in the data?", "describe_dataset", {}),
    ],
)
def test_questions_route_to_tools(
    brain: DemoBrain, ctx: TurnContext, question: str, name: str, arguments: dict
) -> None:
    trace, pending = run(brain, brain.respond(ctx, question))
    calls = [e for e in trace if isinstance(e, ToolCall)]
    assert calls == [ToolCall(name, arguments)] and pending is None
    result = next(e for e in trace if isinstance(e, ToolResult))
    assert result.status == "success"
    assert said(trace)


def test_top_answer_cites_recomputed_numbers(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame
) -> None:
    trace, _ = run(brain, brain.respond(ctx, "which 3 products bring the most revenue?"))
    expected = df.groupby("product")["revenue"].sum().sort_values(ascending=False).head(3)
    answer = said(trace)
    (top, best), *rest = expected.items()
    share = 100 * best / df["revenue"].sum()
    assert answer.startswith(f"{top} sells the most: {money(best)} of revenue, {share:.1f}% of")
    assert f"It is followed by {rest[0][0]} ({money(rest[0][1])}) and {rest[1][0]}" in answer


def test_correlation_answer_is_real(brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame) -> None:
    trace, _ = run(brain, brain.respond(ctx, "how are units and rating related?"))
    r = df["units"].corr(df["customer_rating"])
    assert f"(Pearson r = {r:.3f} over {len(df)} rows)" in said(trace)


QUICKSTART = "Which region sells the most, and is the trend going up?"


def test_a_compound_question_gets_every_part_answered(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame
) -> None:
    trace, pending = run(brain, brain.respond(ctx, QUICKSTART))
    calls = [e for e in trace if isinstance(e, ToolCall)]
    assert [c.name for c in calls] == ["top_n", "trend"] and pending is None
    assert calls[0].arguments["column"] == "region" and calls[1].arguments["metric"] == "revenue"
    thought = "".join(e.text for e in trace if isinstance(e, Reasoning))
    assert thought.startswith("The question asks 2 things: which region ranks highest and")
    answer = said(trace)
    by_region = df.groupby("region")["revenue"].sum().sort_values(ascending=False)
    assert answer.startswith(f"{by_region.index[0]} sells the most: {money(by_region.iloc[0])}")
    monthly = df.groupby(df["date"].dt.to_period("M"))["revenue"].sum()
    change = 100 * (monthly.iloc[-1] / monthly.iloc[0] - 1)
    going_up = "Yes, it is going up" if change > 0 else "No, it is not going up"
    assert f"{going_up}: revenue per month went from {money(monthly.iloc[0])} in January 2024" in (
        answer
    )
    assert f"({change:+.1f}%)" in answer
    assert f"The best month was {monthly.idxmax().strftime('%B %Y')}" in answer


@pytest.mark.parametrize(
    ("question", "opening"),
    [
        ("revenue by region", "East has the highest revenue: $"),
        ("average units per category", "Coffee has the highest average units:"),
        ("is revenue going down?", "No, it is going up: revenue per month went from"),
        ("Which product category has the highest revenue?", "Coffee sells the most:"),
        ("how are units and rating related?", "Units and customer rating have a moderate"),
    ],
)
def test_answers_read_as_sentences(
    brain: DemoBrain, ctx: TurnContext, question: str, opening: str
) -> None:
    answer = said(run(brain, brain.respond(ctx, question))[0])
    assert answer.startswith(opening), answer
    assert "(sum)" not in answer and "_" not in answer  # no column names, no templates


# ---- questions about some rows: one answer per row of a table -------------------------------


@pytest.mark.parametrize(
    ("question", "call"),
    [
        (
            "Which product sells the most at the Airport store?",
            ToolCall(
                "top_n",
                {"column": "product", "n": 5, "by": "revenue", "where": {"store": "Airport"}},
            ),
        ),
        (
            "Is revenue going up at the Old Town store?",
            ToolCall(
                "trend", {"metric": "revenue", "freq": "month", "where": {"store": "Old Town"}}
            ),
        ),
        (
            "revenue by category in the North region",
            ToolCall(
                "group_stats",
                {"by": "category", "metric": "revenue", "agg": "sum", "where": {"region": "North"}},
            ),
        ),
        (
            "How are ratings for Drip Coffee?",  # the longer value wins over the category Coffee
            ToolCall(
                "column_summary", {"column": "customer_rating", "where": {"product": "Drip Coffee"}}
            ),
        ),
        (  # a filter on the ranked column itself would leave one row: not applied
            "Which store sells the most, Airport or Harbor?",
            ToolCall("top_n", {"column": "store", "n": 5, "by": "revenue"}),
        ),
        (  # values are matched as the data writes them: "east" in a word is not the region
            "which product sells the most in the least busy month?",
            ToolCall("trend", {"metric": "revenue", "freq": "month"}),
        ),
    ],
)
def test_a_named_value_restricts_the_call(
    brain: DemoBrain, ctx: TurnContext, question: str, call: ToolCall
) -> None:
    trace, _ = run(brain, brain.respond(ctx, question))
    assert next(e for e in trace if isinstance(e, ToolCall)) == call


@pytest.mark.parametrize(
    "store", ["Airport", "Campus", "Downtown", "Harbor", "Old Town", "Riverside"]
)
def test_a_question_per_store_gets_that_stores_numbers(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame, store: str
) -> None:
    rows = df[df["store"] == store]
    best = rows.groupby("product")["revenue"].sum().sort_values(ascending=False)
    question = f"Which product sells the most at the {store} store?"
    trace, _ = run(brain, brain.respond(ctx, question))
    thought = "".join(e.text for e in trace if isinstance(e, Reasoning))
    assert f'where={{"store": "{store}"}}' in thought
    share = 100 * best.iloc[0] / rows["revenue"].sum()
    assert said(trace).startswith(
        f"At the {store} store, {best.index[0]} sells the most: {money(best.iloc[0])} of revenue, "
        f"{share:.1f}% of the total."
    )
    monthly = rows.groupby(rows["date"].dt.to_period("M"))["revenue"].sum()
    change = round(100 * (monthly.iloc[-1] / monthly.iloc[0] - 1), 2)  # as the tool rounds it
    trend = said(run(brain, brain.respond(ctx, f"Is revenue going up at the {store} store?"))[0])
    assert f"revenue per month at the {store} store went from {money(monthly.iloc[0])}" in trend
    assert f"({change:+.1f}%)" in trend
    assert trend.startswith(("Yes, it is going up:", "No, it is not going up:"))


def test_questions_without_values_keep_their_calls(brain: DemoBrain, ctx: TurnContext) -> None:
    """No `where` key unless the question names rows: unfiltered calls (and their frame
    counts) are what they were."""
    for question in ("Which region sells the most?", "revenue by store", "monthly trend"):
        trace, _ = run(brain, brain.respond(ctx, question))
        assert all("where" not in e.arguments for e in trace if isinstance(e, ToolCall))
        assert all(
            "where" not in json.loads(e.tool_return) for e in trace if isinstance(e, ToolResult)
        )


def test_report_request_computes_then_asks_approval(
    brain: DemoBrain, ctx: TurnContext, df: pd.DataFrame
) -> None:
    trace, pending = run(brain, brain.respond(ctx, "Write a report of rating by store"))
    first = next(e for e in trace if isinstance(e, ToolCall))
    assert first == ToolCall(
        "group_stats", {"by": "store", "metric": "customer_rating", "agg": "mean"}
    )
    assert pending is not None and pending.name == "write_report"
    assert "workdir" not in pending.arguments  # the runner supplies it; cards stay short
    assert "needs your approval" in said(trace)
    assert not (ctx.workdir / "reports").exists()
    execute(brain, pending, workdir=ctx.workdir)
    written = (ctx.workdir / "reports" / "customer-rating-by-store.md").read_text()
    best = df.groupby("store")["customer_rating"].mean().idxmax()
    assert f"| {best} | {df.groupby('store')['customer_rating'].mean().max():.2f} |" in written


def test_tool_error_result_is_reported(brain: DemoBrain, ctx: TurnContext) -> None:
    turn = brain.respond(ctx, "/tool")
    event = next(turn)
    while not isinstance(event, ToolCall):
        event = next(turn)
    failed = ToolResult("call-1", event.name, "error", "Error: boom", dict(event.arguments))
    answer = said([turn.send(failed), *turn])
    assert answer == "The group_stats call failed: Error: boom"


# ---- the tools, against an independent pandas computation -----------------------------------


def test_brain_attributes() -> None:
    brain = DemoBrain()
    assert brain.handle == "letta_nb/demo"
    assert brain.approval_required == frozenset({"write_report"})
    assert set(brain.tools) == {
        "describe_dataset",
        "column_summary",
        "group_stats",
        "top_n",
        "trend",
        "correlation",
        "write_report",
    }
    assert all(
        isinstance(fn(), str)
        for name, fn in brain.tools.items()
        if name in ("describe_dataset", "group_stats", "top_n", "trend", "correlation")
    )


def test_describe_dataset(df: pd.DataFrame) -> None:
    d = json.loads(tools.describe_dataset())
    assert d["rows"] == len(df) and 300 <= len(df) <= 800
    assert d["total_revenue"] == pytest.approx(df["revenue"].sum(), abs=0.005)
    assert d["total_units"] == df["units"].sum()
    assert d["stores"] == df["store"].nunique()
    assert (d["date_from"], d["date_to"]) == ("2024-01-01", "2024-12-31")


def test_column_summary(df: pd.DataFrame) -> None:
    d = json.loads(tools.column_summary("unit_price"))
    assert d["mean"] == pytest.approx(df["unit_price"].mean(), abs=0.005)
    assert d["p75"] == pytest.approx(df["unit_price"].quantile(0.75), abs=0.005)
    c = json.loads(tools.column_summary("Store"))
    assert c["unique"] == df["store"].nunique()
    assert c["top"][0]["rows"] == df["store"].value_counts().max()


def test_trend_matches_pandas(df: pd.DataFrame) -> None:
    d = json.loads(tools.trend("units", "quarter"))
    expected = df.groupby(df["date"].dt.quarter)["units"].sum()
    assert [p["value"] for p in d["periods"]] == list(expected)
    assert d["peak"]["value"] == expected.max()
    rating = json.loads(tools.trend("customer_rating", "month"))
    assert rating["agg"] == "mean" and len(rating["periods"]) == 12


def test_correlation_matches_pandas(df: pd.DataFrame) -> None:
    d = json.loads(tools.correlation("unit_price", "units", "spearman"))
    spearman = df["unit_price"].rank().corr(df["units"].rank())
    assert d["r"] == pytest.approx(spearman, abs=0.0005)
    assert json.loads(tools.correlation())["r"] == pytest.approx(
        df["units"].corr(df["customer_rating"]), abs=0.0005
    )


def test_top_n_shares(df: pd.DataFrame) -> None:
    d = json.loads(tools.top_n("category", 2, "units"))
    expected = df.groupby("category")["units"].sum().sort_values(ascending=False)
    assert [row["category"] for row in d["top"]] == list(expected.index[:2])
    assert d["top"][0]["share_pct"] == pytest.approx(
        100 * expected.iloc[0] / expected.sum(), abs=0.005
    )


def test_where_filters_rows(df: pd.DataFrame) -> None:
    airport = df[df["store"] == "Airport"]
    top = json.loads(tools.top_n("product", 3, "revenue", where={"store": "airport"}))
    expected = airport.groupby("product")["revenue"].sum().sort_values(ascending=False)
    assert top["where"] == {"store": "Airport"}  # the data's own spelling
    assert [row["product"] for row in top["top"]] == list(expected.index[:3])
    assert top["total"] == pytest.approx(airport["revenue"].sum(), abs=0.005)
    east_coffee = df[(df["region"] == "East") & (df["category"] == "Coffee")]
    groups = json.loads(
        tools.group_stats("store", "units", where={"region": "East", "category": "Coffee"})
    )
    assert groups["overall"] == east_coffee["units"].sum()
    assert {g["store"] for g in groups["groups"]} == {"Airport", "Harbor"}
    quarters = json.loads(tools.trend("units", "quarter", where={"product": "Latte"}))
    latte = df[df["product"] == "Latte"]
    assert [p["value"] for p in quarters["periods"]] == list(
        latte.groupby(latte["date"].dt.quarter)["units"].sum()
    )
    rating = json.loads(tools.column_summary("customer_rating", where={"store": "Old Town"}))
    old_town = df[df["store"] == "Old Town"]["customer_rating"]
    assert (rating["count"], rating["mean"]) == (
        len(old_town),
        pytest.approx(old_town.mean(), abs=0.005),
    )
    assert "where" not in json.loads(tools.top_n())  # unfiltered payloads are unchanged


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("group_stats", {"by": "colour"}, "unknown group-by column 'colour'"),
        ("group_stats", {"agg": "mode"}, "unknown aggregation 'mode'"),
        ("top_n", {"n": 0}, "n must be a positive integer"),
        ("top_n", {"n": "many"}, "n must be a positive integer"),
        ("top_n", {"by": "store"}, "unknown ranking metric 'store'"),
        ("trend", {"freq": "year"}, "unknown frequency 'year'"),
        ("correlation", {"a": "units", "b": "units"}, "two different columns"),
        ("column_summary", {"column": ""}, "column must be a column name"),
        ("top_n", {"where": {"store": "Mars"}}, "unknown store 'Mars'; expected one of: Airport"),
        ("trend", {"where": {"colour": "red"}}, "unknown filter column 'colour'"),
        ("group_stats", {"where": {"store": 3}}, "unknown store 3"),
        ("group_stats", {"where": "Airport"}, "where must map category columns to values"),
        (
            "top_n",
            {"where": {"store": "Airport", "region": "North"}},
            "no rows match store=Airport",
        ),
        ("write_report", {"title": "x", "body": "y", "workdir": "relative"}, "absolute path"),
        ("write_report", {"title": "!!", "body": "y", "workdir": "/tmp"}, "letter or digit"),
    ],
)
def test_bad_arguments_raise_one_line_value_error(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        tools.TOOLS[name](**kwargs)
    assert "\n" not in str(info.value)


def test_write_report_stays_inside_reports(tmp_path: Path) -> None:
    d = json.loads(tools.write_report("../../etc/passwd", "body", str(tmp_path)))
    assert d["relative_path"] == "reports/etc-passwd.md"
    assert (tmp_path / "reports" / "etc-passwd.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]
