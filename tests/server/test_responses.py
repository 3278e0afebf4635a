"""A stored row that cannot be encoded as it is (written before the guard existed: an unpaired
surrogate, nesting deeper than JSON encoders recurse, NaN) never makes an endpoint fail: it is
served repaired, list endpoints keep working, also after a restart, and connect() works."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import httpx
from letta_client import Letta

from letta_nb.server import start_in_process
from letta_nb.server.responses import encode, servable
from tests.server.scripted_brain import HANDLE, ScriptedBrain


def _deep(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


def _poison(db: Path, agent_id: str) -> None:
    """Write the rows the old server stored from the attack requests (raw SQL, no guard)."""
    with sqlite3.connect(db) as con:
        row = con.execute("SELECT config FROM agents WHERE id = ?", (agent_id,)).fetchone()
        config = json.loads(row[0])
        config["description"] = "bad \ud800 text"
        config["metadata"] = {"deep": _deep(600), "nan": math.nan}
        con.execute("UPDATE agents SET config = ? WHERE id = ?", (json.dumps(config), agent_id))


def test_poisoned_rows_are_served_repaired_and_lists_keep_working(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    brain = ScriptedBrain()
    brains = {brain.handle: brain}
    with start_in_process(db, brains=brains) as srv:
        c = Letta(base_url=srv.base_url, max_retries=0)
        bad = c.agents.create(name="victim", model=HANDLE).id
        good = c.agents.create(name="bystander", model=HANDLE).id
        _poison(db, bad)
        for _ in range(2):  # repeated: nothing is left broken by the first answer
            r = httpx.get(srv.base_url + "/v1/agents/", timeout=30)
            assert r.status_code == 200
            names = {a["id"]: a["name"] for a in r.json()}
            assert names[good] == "bystander" and names[bad] == "victim"
        one = httpx.get(f"{srv.base_url}/v1/agents/{bad}", timeout=30)
        assert one.status_code == 200 and one.json()["description"] == "bad \ufffd text"
        assert one.json()["metadata"]["nan"] is None
        assert {a.id for a in c.agents.list().items} == {bad, good}  # the SDK parses it
        c.agents.delete(bad)  # and the user can remove it
    with start_in_process(db, brains=brains) as srv:  # after a restart too
        r = httpx.get(srv.base_url + "/v1/agents/", timeout=30)
        assert r.status_code == 200 and [a["id"] for a in r.json()] == [good]


def test_servable_repairs_what_json_cannot_encode() -> None:
    value = {"s": "a\ud800b", "\udc00": [math.inf, 1.5, True, None], "d": _deep(3000)}
    out = json.loads(encode(value))
    assert out["s"] == "a\ufffdb" and out["\ufffd"] == [None, 1.5, True, None]
    depth, node = 0, out["d"]
    while isinstance(node, dict):
        node, depth = node.get("k"), depth + 1
    assert 0 < depth < 100  # cut, not recursed into
    assert servable("plain") == "plain" and encode({"a": 1}) == b'{"a":1}'
