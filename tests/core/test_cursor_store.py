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

    for i, word in enumerate(["Hello", " there"], start=2):
        tr.apply(Chunk("assistant_message", {"id": "message-1", "content": word}, "run-1", i))
    tr.apply(Chunk("stop_reason", {"stop_reason": "end_turn"}), "run-1")
    return Cursor(key=key, agent_id="agent-1", runs=["run-1"], seqs=tr.seq_state(),
                  status="completed", stop_reason="end_turn", records=tr.to_records(),
                  message="hi")


def test_round_trip_and_file_mode(tmp_path: Path) -> None:
    db = tmp_path / "state" / "cursors.db"
    store = CursorStore(db)
    cur = _cursor()
    store.put(cur)
    assert store.get(cur.key) is cur
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
    assert again.find_by_run("run-1").key == cur.key
    assert [c.key for c in again.all()] == [cur.key]
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
