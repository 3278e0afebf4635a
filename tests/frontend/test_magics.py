"""%%letta / %letta through IPython's globalipapp against the embedded server."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from letta_nb.magics import LettaMagics

TOKENS_5 = "token1 token2 token3 token4 token5\n■ end_turn\n"


@pytest.fixture()
def ip(session: Any) -> Iterator[Any]:
    shell = globalipapp.get_ipython()  # module attribute: rebound after the first start
    shell.extension_manager.load_extension("letta_nb")
    yield shell
    shell.extension_manager.unload_extension("letta_nb")


def run(ip: Any, source: str) -> Any:
    with capture_output() as cap:
        result = ip.run_cell(source)
    cap.result = result
    return cap


def run_ids(session: Any) -> set[str]:
    return {r["id"] for r in session.runs(limit=100)}


def test_help_is_generated_for_both_magics(ip: Any) -> None:
    cell_doc = ip.find_cell_magic("letta").__doc__
    line_doc = ip.find_line_magic("letta").__doc__
    assert "%%letta [--agent AGENT] [--new] [--conversation NAME|new|ID]" in cell_doc
    assert "--auto-approve" in cell_doc and "--out VAR" in cell_doc
    assert (
        "%letta" in line_doc
        and "{connect,agents,agent,conversations,runs,attach,cancel,chunks,status,dashboard}"
        in line_doc
    )
    assert "--from SEQ" in line_doc and "--conversation NAME|new|ID" in line_doc
    assert "%letta dashboard [--stall S]" in line_doc
    assert "%%letta map DATAFRAME [--concurrency N] [--out VAR]" in cell_doc


def test_wait_prints_deterministic_transcript_and_rerun_resumes(ip: Any, session: Any) -> None:
    cap = run(ip, "%%letta --wait --agent demo-analyst\n/long 5")
    assert cap.stdout.startswith(TOKENS_5), cap.stdout
    assert cap.stderr == ""
    before = run_ids(session)
    again = run(ip, "%%letta --wait --agent demo-analyst\n/long 5")
    assert again.stdout == cap.stdout
    assert run_ids(session) == before  # re-running the cell made no second run
    fresh = run(ip, "%%letta --wait --new --agent demo-analyst\n/long 5")
    assert fresh.stdout.startswith(TOKENS_5)
    assert len(run_ids(session) - before) == 1


def test_non_blocking_shows_the_widget_and_out_stores_the_handle(ip: Any) -> None:
    cap = run(ip, "%%letta --out h --new\n/long 3 10")
    assert cap.stdout == "" and cap.stderr == ""
    assert [o.data["text/plain"] for o in cap.outputs] == [
        "<letta_nb run view: agent demo-analyst>"
    ]
    assert "application/vnd.jupyter.widget-view+json" in cap.outputs[0].data
    handle = ip.user_ns["h"]
    assert handle.wait(20) == "completed"
    assert re.findall(r"token\d+", handle.transcript) == ["token1", "token2", "token3"]


def test_auto_approve_keeps_waiting_through_the_new_run(ip: Any) -> None:
    cap = run(ip, "%%letta --wait --new --auto-approve --timeout 30\n/gated")
    assert "? approval requested: write_report(" in cap.stdout
    assert "■ requires_approval" in cap.stdout
    assert "← write_report [success]" in cap.stdout
    assert cap.stdout.rstrip().splitlines()[-2] == "■ end_turn"
    assert cap.stderr == ""


def test_auto_deny_sends_a_denial(ip: Any) -> None:
    cap = run(ip, "%%letta --wait --new --auto-deny --timeout 30\n/gated")
    assert "■ requires_approval" in cap.stdout
    assert "nothing was written" in cap.stdout and "denied automatically" in cap.stdout
    assert cap.stdout.rstrip().splitlines()[-2] == "■ end_turn"


def test_wait_stops_at_an_approval_request(ip: Any) -> None:
    cap = run(ip, "%%letta --wait --new --out g\n/gated")
    assert cap.stdout.rstrip().endswith("step(s)")
    assert "■ requires_approval" in cap.stdout
    assert cap.stderr.count("\n") == 1 and "waiting for an approval" in cap.stderr
    handle = ip.user_ns["g"]
    status = run(ip, "%letta status").stdout
    assert "approval pending: write_report(" in status and "requires_approval" in status
    handle.deny("not now")
    assert handle.wait(20) == "completed"
    assert "not now" in handle.transcript


def test_config_traits(ip: Any, session: Any) -> None:
    magics = ip.magics_manager.registry["LettaMagics"]
    run(ip, "%config LettaMagics.wait = True\n%config LettaMagics.tail_chars = 100")
    try:
        assert magics.wait is True and magics.tail_chars == 100
        cap = run(ip, "%%letta --new\n/long 5")
        assert cap.stdout.startswith(TOKENS_5)
        cap = run(ip, "%%letta --no-wait --new\n/long 2")
        assert cap.outputs and cap.stdout == ""
    finally:
        run(ip, "%config LettaMagics.wait = False\n%config LettaMagics.tail_chars = 4000")


BAD_CELLS = [
    ("%%letta --bogus\nhello", "UsageError: unknown option --bogus"),
    (
        "%%letta --agnet demo-analyst\nhello",
        "UsageError: unknown option --agnet (did you mean --agent?)",
    ),
    ("%%letta --wiat\nhello", "UsageError: unknown option --wiat (did you mean --wait?)"),
    ("%%letta --auto-approve --auto-deny\nhello", "UsageError: --auto-approve and --auto-deny"),
    ("%%letta\n   ", "UsageError: %%letta needs a message"),
    ("%%letta --out 1x\nhi", "UsageError: --out wants a variable name"),
    ("%%letta --timeout -3\nhi", "UsageError: argument --timeout: wants a positive, finite"),
    ("%%letta --timeout inf\nhi", "UsageError: argument --timeout: wants a positive, finite"),
    ("%%letta --timeout nan\nhi", "UsageError: argument --timeout: wants a positive, finite"),
    ("%%letta --timeout -1 --wait\nhi", "UsageError: argument --timeout: wants a positive"),
    ("%%letta --timeout abc\nhi", "UsageError: argument --timeout: wants a number of seconds"),
    ("%letta", "UsageError: the following arguments are required: command"),
    ("%letta frobnicate", "UsageError: unknown command 'frobnicate'; commands: connect,"),
    ("%letta atach run-1", "UsageError: unknown command 'atach' (did you mean attach?)"),
    ("%letta runs --lmit 3", "UsageError: unknown option --lmit (did you mean --limit?)"),
    (
        "%letta agents --limit 3",
        "UsageError: --limit only applies to `%letta runs` / `%letta conversations`",
    ),
    (
        "%letta agents --conversation x",
        "UsageError: --conversation only applies to `%letta connect` / `%letta runs`",
    ),
    ("%letta conversations --active", "UsageError: --active only applies to `%letta runs`"),
    ("%%letta --convresation a\nhi", "UsageError: unknown option --convresation (did you mean"),
    ("%letta attach", "UsageError: `%letta attach` takes one argument, got 0"),
    ("%letta runs --limit 0", "UsageError: argument --limit: wants a number >= 1"),
    ("%letta attach run-1 --from -2", "UsageError: argument --from: wants a number >= 0"),
    ("%%letta map nope\n/long {n}", "UsageError: no variable 'nope' in the notebook"),
    ("%%letta map\n/long {n}", "UsageError: the following arguments are required: DATAFRAME"),
    ("%%letta map rows\n  ", "UsageError: %%letta map needs a template in the cell body"),
    ("%%letta map rows --concurency 2\nx", "UsageError: unknown option --concurency (did you"),
    ("%%letta map rows --concurrency 0\nx", "UsageError: argument --concurrency: wants a number"),
    ("%%letta map rows --out 1x\nx", "UsageError: --out wants a variable name, not '1x'"),
    ("%letta dashboard now", "UsageError: `%letta dashboard` takes no argument, got 1"),
    ("%letta runs --stall 3", "UsageError: --stall only applies to `%letta dashboard`"),
]


@pytest.mark.parametrize(("source", "line"), BAD_CELLS)
def test_bad_arguments_give_one_line(ip: Any, source: str, line: str) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"n": [1]})
    cap = run(ip, source)
    text = cap.stdout + cap.stderr
    assert "Traceback" not in text
    assert text.strip().count("\n") == 0, text
    assert text.startswith(line), text


LETTA_ERRORS = [
    ("%%letta --agent nope\nhello", "letta: unknown agent 'nope' (known: "),
    (
        "%%letta --conversation conv-00000000-0000-4000-8000-0000000000ff\nhello",
        "letta: unknown conversation 'conv-00000000-0000-4000-8000-0000000000ff'",
    ),
    ("%letta runs --conversation no-such-name", "letta: agent demo-analyst has no conversation"),
    ("%letta agent nope", "letta: unknown agent 'nope' (known: "),
    ("%letta attach run-does-not-exist", "letta: "),
    ("%letta chunks run-does-not-exist", "letta: "),
    ("%letta connect http://127.0.0.1:9", "letta: "),
    ("%letta connect --api-key-env LNB_UNSET_VAR", "letta: environment variable LNB_UNSET_VAR"),
]


@pytest.mark.parametrize(("source", "start"), LETTA_ERRORS)
def test_letta_errors_are_one_red_line(ip: Any, session: Any, source: str, start: str) -> None:
    import letta_nb.connection as sess

    try:
        cap = run(ip, source)
    finally:
        sess._current = session  # a failed connect must not leave a broken session around
    assert cap.stdout == ""
    assert "Traceback" not in cap.stderr
    assert cap.stderr.startswith(start), cap.stderr
    assert cap.stderr.count("\n") == 1, cap.stderr


def test_line_commands(ip: Any, session: Any) -> None:
    cap = run(ip, "%%letta --wait --new --out r\n/long 4")
    run_id = ip.user_ns["r"].run_id
    cap = run(ip, "%letta agents")
    assert "demo-analyst" in cap.outputs[0].data["text/plain"]
    cap = run(ip, "%letta runs --agent demo-analyst --limit 2")
    assert run_id in cap.outputs[0].data["text/plain"]
    cap = run(ip, f"%letta chunks {run_id}")
    assert "[7 rows x 9 columns]" in cap.outputs[0].data["text/plain"]  # ping+4+stop+usage
    cap = run(ip, "%letta status")
    assert f"run {run_id} · completed" in cap.stdout
    assert "approval pending" not in cap.stdout
    cap = run(ip, f"%letta attach {run_id} --from 2")
    assert (
        cap.outputs[0].data["text/plain"] == "<letta_nb run view>"
        or "run view" in cap.outputs[0].data["text/plain"]
    )
    cap = run(ip, "%letta agent demo-analyst")
    assert cap.stdout.startswith("default agent: demo-analyst (agent-")
    cap = run(ip, f"%letta connect {session.backend.base_url}")
    assert cap.stdout.startswith(f"connected to {session.backend.base_url} · agent ")


def test_cancel_a_live_run(ip: Any) -> None:
    run(ip, "%%letta --new --out c\n/long 2000 20")
    handle = ip.user_ns["c"]
    cap = run(ip, "%letta cancel")
    assert cap.stdout.startswith("cancel run-"), cap.stdout + cap.stderr
    assert handle.wait(20) == "cancelled"


def test_runs_frame_is_displayed_typed(ip: Any) -> None:
    run(ip, "%%letta --wait --new\n/long 2")
    magics: LettaMagics = ip.magics_manager.registry["LettaMagics"]
    from letta_nb import runs_frame

    assert magics.runs_limit == 10  # `%letta runs` fits a page by default
    frame = runs_frame(limit=magics.runs_limit)
    assert isinstance(frame, pd.DataFrame) and len(frame) >= 1


def test_cells_sharing_a_key_keep_their_views_and_a_rerun_replaces_its_own(ip: Any) -> None:
    from letta_nb.widgets.run_view import _views_by_key

    def live_views(prefix: str) -> dict[str, Any]:
        views = {k: r() for k, r in _views_by_key.items() if k.startswith(prefix)}
        return {k: v for k, v in views.items() if v is not None and v.comm is not None}

    first = "%%letta --key shared-view --out a\n/long 3"
    run(ip, first)
    run(ip, "%%letta --key shared-view --out b\n/long 3")  # another cell, the same cursor
    handle = ip.user_ns["a"]
    assert handle.wait(20) == "completed" and ip.user_ns["b"].run_id == handle.run_id
    prefix = handle.key + "\0"
    before = live_views(prefix)
    assert len(before) == 2, "both cells keep a live view"
    run(ip, first)  # the first cell, re-run: its own old view is retired
    after = live_views(prefix)
    assert len(after) == 2
    replaced = [v for k, v in before.items() if k in after and after[k] is not v]
    assert replaced and all(v.comm is None for v in replaced)


def test_map_runs_the_template_over_the_rows_and_a_rerun_reattaches(ip: Any, session: Any) -> None:
    ip.user_ns["rows"] = pd.DataFrame({"n": [2, 3, 4]}, index=["a", "b", "c"])
    cell = "%%letta map rows --concurrency 2 --out b --wait\n/long {n}"
    before = run_ids(session)
    cap = run(ip, cell)
    assert cap.stdout == "batch done · 3 items · 3 completed\n" and cap.stderr == ""
    batch = ip.user_ns["b"]
    assert batch.frame.loc["c", "answer"] == "token1 token2 token3 token4"
    assert cap.outputs[0].data["text/plain"] == "batch done · 3 items · 3 completed"
    new = run_ids(session) - before
    assert len(new) == 3
    again = run(ip, cell)  # re-running the cell: the same batch, nothing sent again
    assert again.stdout == cap.stdout and ip.user_ns["b"] is batch
    assert run_ids(session) - before == new
    cap = run(ip, "%letta status")
    assert f"batch {batch.key} · done · 3 items · 3 completed" in cap.stdout
    bad = run(ip, "%%letta map rows\nPlease {missing}")
    assert bad.stderr.startswith("letta: the template names {missing} but the DataFrame")


def test_dashboard_shows_the_live_dashboard(ip: Any, session: Any) -> None:
    from letta_nb.widgets import dashboard

    cap = run(ip, "%letta dashboard --stall 12")
    assert cap.stderr == "" and "letta_nb dashboard" in cap.outputs[0].data["text/html"]
    live = dashboard._live() if dashboard._live is not None else None
    assert live is not None and live.stall_after == 12.0
    live.close()


def recall_handle_conversation(session: Any, name: str) -> str:
    found = [c for c in session.conversations(limit=1000) if c["summary"] == name]
    assert len(found) == 1
    return str(found[0]["id"])


def test_conversation_options(ip: Any, session: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"magic {uuid.uuid4().hex[:6]}"
    cap = run(ip, f"%%letta --wait --conversation '{name}'\n/long 3")
    assert cap.stdout.startswith("token1 token2 token3"), cap.stdout + cap.stderr
    before = run_ids(session)
    again = run(ip, f"%%letta --wait --conversation '{name}'\n/long 3")
    assert again.stdout == cap.stdout and run_ids(session) == before  # re-run: resumed
    recall = run(ip, f"%%letta --wait -c '{name}'\n/recall")
    assert recall.stdout.startswith('You sent 1 earlier message here; it was "/long 3".')
    conv_id = recall_handle_conversation(session, name)
    cap = run(ip, "%letta conversations --limit 50")
    assert conv_id in cap.outputs[0].data["text/plain"]
    cap = run(ip, f"%letta runs --conversation '{name}'")
    assert "[2 rows x" in cap.outputs[0].data["text/plain"]
    monkeypatch.setenv("JPY_SESSION_NAME", f"/tmp/magic-{uuid.uuid4().hex[:6]}.ipynb")
    cap = run(ip, "%letta connect --conversation new")
    assert " · conversation notebook magic-" in cap.stdout, cap.stdout + cap.stderr
    bound = __import__("letta_nb.connection", fromlist=["current"]).current().conversation
    assert run(ip, "%letta connect --conversation new").stdout == cap.stdout  # kept
    fresh = run(ip, "%%letta --wait --new\n/recall")
    assert fresh.stdout.startswith("Nothing earlier"), fresh.stdout  # this notebook's own
    status = run(ip, "%letta status")
    assert f"({bound['id']})" in status.stdout.splitlines()[0]
    cap = run(ip, "%letta connect --conversation default")
    assert cap.stdout.endswith(" · the agent's own history\n")
