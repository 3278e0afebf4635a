"""Cursor store: round trip, file mode 0600, reload after a "kernel restart", cell keys."""

from __future__ import annotations

import stat
from pathlib import Path

from letta_nb.core.cursor import Cursor, CursorStore, cell_key
from letta_nb.core.render import render_text
from letta_nb.core.transcript import Transcript


def _cursor(key: str = "cell:nb.ipynb:abc") -> Cursor:
    tr = Transcript()
    from letta_nb.core.chunks import Chunk

    tr.begin_stream("run-1", 1)  # seq 1 is the run's ping
    for i, word in enumerate(["Hello", " there"], start=2):
        tr.apply(Chunk("assistant_message", {"id": "message-1", "content": word}, "run-1", i))
    tr.apply(Chunk("stop_reason", {"stop_reason": "end_turn"}), "run-1")
    return Cursor(
        key=key,
        agent_id="agent-1",
        runs=["run-1"],
        seqs=tr.seq_state(),
        status="completed",
        stop_reason="end_turn",
        records=tr.to_records(),
        message="hi",
    )


def test_round_trip_and_file_mode(tmp_path: Path) -> None:
    db = tmp_path / "state" / "cursors.db"
    store = CursorStore(db)
    cur = _cursor()
    store.put(cur)
    got = store.get(cur.key)
    assert got is not None and (got.key, got.runs, got.seqs, got.records) == (
        cur.key,
        cur.runs,
        cur.seqs,
        cur.records,
    )
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert Cursor.from_json(cur.to_json()) == cur
    store.close()


def test_reload_after_kernel_restart(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    first = CursorStore(db)
    cur = _cursor()
    first.put(cur)
    first.close()
    again = CursorStore(db)  # a new kernel: nothing in memory
    loaded = again.get(cur.key)
    assert loaded is not None and loaded is not cur
    assert loaded.runs == ["run-1"] and loaded.seqs == {"run-1": 4} and loaded.last_seq == 4
    tr = Transcript.from_records(loaded.records, loaded.seqs)
    assert render_text(tr) == "Hello there\n■ end_turn"
    again.delete(cur.key)
    assert again.get(cur.key) is None
    again.close()


def test_env_overrides_the_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LETTA_NB_STATE_DIR", str(tmp_path / "st"))
    monkeypatch.delenv("LETTA_NB_CURSOR_DB", raising=False)
    store = CursorStore()
    assert store.path == tmp_path / "st" / "cursors.db"


def test_cell_keys() -> None:
    assert cell_key(notebook="a.ipynb", cell_id="c1", agent="x", source="hi") == "cell:a.ipynb:c1"
    assert cell_key(notebook=None, cell_id=None, agent="x", source="hi", explicit="k") == "key:k"
    by_src = cell_key(notebook=None, cell_id=None, agent="x", source="hi\n")
    assert by_src == cell_key(notebook=None, cell_id=None, agent="x", source="hi")
    assert by_src != cell_key(notebook=None, cell_id=None, agent="y", source="hi")


def test_cheap_puts_keep_the_records_and_their_seqs(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    store = CursorStore(db)
    cur = _cursor()
    store.put(cur)  # a settle point: records with the seqs they reflect
    later = Cursor(
        key=cur.key,
        agent_id="agent-1",
        runs=["run-1"],
        seqs={"run-1": 90},
        status="running",
        records=[{"not": "written"}],
    )
    store.put(later, records=False)  # streaming: O(runs), the records stay as they were
    assert store.get(cur.key).records == cur.records
    store.close()
    loaded = CursorStore(db).get(cur.key)
    assert loaded.seqs == {"run-1": 90} and loaded.status == "running"
    assert loaded.records == cur.records and loaded.record_seqs == {"run-1": 4}
    assert loaded.resume_seqs == {"run-1": 4} and not loaded.records_current


def test_state_without_records_resumes_from_zero(tmp_path: Path) -> None:
    store = CursorStore(tmp_path / "cursors.db")
    store.put(Cursor(key="k", agent_id="a", runs=["run-1"], seqs={"run-1": 7}), records=False)
    store.close()
    loaded = CursorStore(tmp_path / "cursors.db").get("k")
    assert loaded.records == [] and loaded.resume_seqs == {}


def test_older_files_with_records_in_the_body_still_load(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "cursors.db"
    cur = _cursor()
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE cursors (key TEXT PRIMARY KEY, body TEXT NOT NULL, updated_at REAL NOT NULL)"
    )
    legacy = cur.to_json().replace(',"record_seqs":null', "")
    conn.execute("INSERT INTO cursors VALUES (?,?,?)", (cur.key, legacy, 1.0))
    conn.commit()
    conn.close()
    store = CursorStore(db)
    loaded = store.get(cur.key)
    assert loaded.records == cur.records and loaded.record_seqs is None
    assert loaded.resume_seqs == loaded.seqs == {"run-1": 4} and loaded.records_current


def test_memory_keeps_no_second_copy_of_the_transcript(tmp_path: Path) -> None:
    """The follower holds the live transcript; the store's memory tier holds cheap state."""
    store = CursorStore(tmp_path / "cursors.db")
    cur = _cursor()
    store.put(cur)
    assert store._mem[cur.key].records == []
    assert store.get(cur.key, records=False).records == []
    full = store.get(cur.key)  # rebuilding a chain reads the records from disk
    assert full.records == cur.records and full.resume_seqs == {"run-1": 4}
    assert store._mem[cur.key].records == []


def test_a_corrupt_file_is_moved_aside_with_one_line_and_a_fresh_store_works(
    tmp_path: Path,
) -> None:
    db = tmp_path / "cursors.db"
    db.write_bytes(b"this is not an SQLite database, it is a text file " * 100)
    lines: list[str] = []
    store = CursorStore(db, warn=lines.append)
    assert store.get("cell:nb.ipynb:abc") is None  # no traceback: a fresh, empty store
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "could not be read" in lines[0] and "cursors.db.corrupt-" in lines[0]
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("cursors.db.corrupt-")]
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not")
    cur = _cursor()
    store.put(cur)
    store.close()
    again = CursorStore(db, warn=lines.append).get(cur.key)
    assert again is not None and again.records == cur.records and len(lines) == 1
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_damaged_database_page_is_corruption_too(tmp_path: Path) -> None:
    db = tmp_path / "cursors.db"
    store = CursorStore(db)
    store.put(_cursor())
    store.close()
    raw = bytearray(db.read_bytes())
    raw[16:24] = b"\xff" * 8  # page size and format bytes of the header
    db.write_bytes(bytes(raw))
    for extra in tmp_path.glob("cursors.db-*"):
        extra.unlink()
    lines: list[str] = []
    store = CursorStore(db, warn=lines.append)
    assert store.get("cell:nb.ipynb:abc") is None
    assert len(lines) == 1 and "could not be read" in lines[0]
    store.put(_cursor("k2"))
    assert store.get("k2") is not None


def test_a_full_disk_is_one_line_and_cursors_stay_in_memory(tmp_path: Path) -> None:
    """SQLITE_FULL, made real: the file may not grow past its current pages."""
    db = tmp_path / "cursors.db"
    lines: list[str] = []
    store = CursorStore(db, warn=lines.append)
    store.put(_cursor("small"))
    conn = store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = _cursor("big")
    big.records = [{"kind": "assistant_message", "text": "x" * 200_000}]
    for _ in range(3):  # said once, not once per write
        store.put(big)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "database or disk is full" in lines[0] and "runs go on on the server" in lines[0]
    kept = store.get("big", records=False)
    assert kept is not None and kept.status == "completed"  # memory still has it
    conn.execute("PRAGMA max_page_count = 1073741823")  # space again: writes work, no warning
    store.put(_cursor("later"))
    assert store.get("later") is not None and len(lines) == 1
