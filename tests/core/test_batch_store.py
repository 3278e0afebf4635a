"""The batch tables of the cursor store: items survive a "kernel restart", an item's
transcript is kept only while it runs, bad rows or a full disk cost one line, never the batch."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from letta_nb.core.cursor import CursorStore


def test_batches_and_items_survive_a_restart_in_a_private_file(tmp_path: Path) -> None:
    db = tmp_path / "state" / "cursors.db"
    store = CursorStore(db)
    store.put_batch("batch:a", {"agent_id": "agent-1", "size": 3})
    store.put_batch_items("batch:a", [(0, {"status": "completed"}), (1, {"status": "pending"})])
    store.put_batch_items("batch:b", [(0, {"status": "failed"})])  # another batch apart
    store.put_item_records("batch:a", 1, {"attempt": 0, "records": [{"kind": "x"}], "seqs": {}})
    store.close()
    again = CursorStore(db)
    assert again.get_batch("batch:a") == {"agent_id": "agent-1", "size": 3}
    assert again.get_batch("batch:nope") is None
    assert again.batch_items("batch:a") == {0: {"status": "completed"}, 1: {"status": "pending"}}
    assert again.batch_items("batch:b") == {0: {"status": "failed"}}
    assert again.item_records("batch:a", 1) == {
        "attempt": 0,
        "records": [{"kind": "x"}],
        "seqs": {},
    }
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_an_items_transcript_is_kept_while_it_runs_and_dropped_when_it_is_over(
    tmp_path: Path,
) -> None:
    store = CursorStore(tmp_path / "cursors.db")
    store.put_batch_items("k", [(0, {"status": "running"})])
    store.put_item_records("k", 0, {"records": [], "seqs": {"run-1": 7}})
    store.put_batch_items("k", [(0, {"status": "running", "runs": ["run-1"]})])
    assert store.item_records("k", 0) == {"records": [], "seqs": {"run-1": 7}}  # kept
    store.put_batch_items("k", [(0, {"status": "completed"})], drop_records=True)
    assert store.item_records("k", 0) is None
    store.delete_batch("k")
    assert store.batch_items("k") == {} and store.get_batch("k") is None


def test_an_unreadable_row_is_one_line_and_the_others_load(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    store = CursorStore(db)
    store.put_batch_items("k", [(0, {"status": "completed"}), (1, {"status": "pending"})])
    store.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE batch_items SET body='{not json' WHERE pos=0")
    con.commit()
    con.close()
    lines: list[str] = []
    assert CursorStore(db, warn=lines.append).batch_items("k") == {1: {"status": "pending"}}
    assert len(lines) == 1 and "item 0 of batch 'k' is unreadable" in lines[0]


def test_an_older_file_gets_the_batch_tables(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE cursors (key TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at REAL)")
    con.commit()
    con.close()
    store = CursorStore(db)
    store.put_batch_items("k", [(0, {"status": "pending"})])
    assert store.batch_items("k") == {0: {"status": "pending"}}


def test_a_full_disk_is_one_line_and_the_batch_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    lines: list[str] = []
    store = CursorStore(db, warn=lines.append)
    store.put_batch_items("k", [(0, {"status": "pending"})])
    conn = store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = [(i, {"status": "completed", "answer": "x" * 5000}) for i in range(200)]
    for _ in range(3):
        store.put_batch_items("k", big)  # no exception: said once
    assert len(lines) == 1 and "database or disk is full" in lines[0]
