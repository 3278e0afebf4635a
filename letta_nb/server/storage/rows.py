"""Row decoding, history scopes and cursor pagination shared by the store's queries."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

RUN_COLS = (
    "ord, id, agent_id, created_at, completed_at, status, stop_reason, background, metadata, "
    "otid_key, last_seq, usage, total_duration_ns, ttft_ns, conversation_id"
)
RUN_KEYS = [c.strip() for c in RUN_COLS.split(",")]
AGENT_COLS = "ord, id, name, model, created_at, updated_at, config, pending, last_stop_reason"


def run_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(RUN_KEYS, row, strict=True))
    out["metadata"] = json.loads(out["metadata"])
    out["usage"] = json.loads(out["usage"]) if out["usage"] else None
    return out


def agent_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "ord": row[0],
        "id": row[1],
        "name": row[2],
        "model": row[3],
        "created_at": row[4],
        "updated_at": row[5],
        "config": json.loads(row[6]),
        "pending": json.loads(row[7]) if row[7] else None,
        "last_stop_reason": row[8],
    }


CONV_COLS = (
    "ord, id, agent_id, summary, model, model_settings, created_at, updated_at, "
    "last_message_at, deleted_at, hidden, pending"
)
CONV_KEYS = [c.strip() for c in CONV_COLS.split(",")]


def conversation_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(CONV_KEYS, row, strict=True))
    out["model_settings"] = json.loads(out["model_settings"]) if out["model_settings"] else None
    out["pending"] = json.loads(out["pending"]) if out["pending"] else None
    out["hidden"] = bool(out["hidden"])
    return out


def history_where(agent_id: str, conversation_id: str | None) -> tuple[str, list[Any]]:
    """The messages of one history: a conversation's (its copies included) or the agent's
    default history."""
    if conversation_id is None:
        return "agent_id = ? AND conversation_id IS NULL", [agent_id]
    return "conversation_id = ?", [conversation_id]


def read_pending(db: sqlite3.Connection, agent_id: str, conversation_id: str | None) -> Any:
    if conversation_id is None:
        row = db.execute("SELECT pending FROM agents WHERE id = ?", (agent_id,)).fetchone()
    else:
        row = db.execute(
            "SELECT pending FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
    return json.loads(row[0]) if row and row[0] else None


def write_pending(
    db: sqlite3.Connection,
    agent_id: str,
    conversation_id: str | None,
    pending: dict[str, Any] | None,
    now: float,
    *,
    cancelled: bool = False,
) -> None:
    value = json.dumps(pending) if pending is not None else None
    if conversation_id is None:
        extra = ", last_stop_reason = 'cancelled'" if cancelled else ""
        db.execute(
            f"UPDATE agents SET pending = ?{extra}, updated_at = ? WHERE id = ?",
            (value, now, agent_id),
        )
    else:
        db.execute(
            "UPDATE conversations SET pending = ?, updated_at = ? WHERE id = ?",
            (value, now, conversation_id),
        )
        if cancelled:
            db.execute(
                "UPDATE agents SET last_stop_reason = 'cancelled', updated_at = ? WHERE id = ?",
                (now, agent_id),
            )


class Page:
    """Cursor pagination over an ``ord`` column: ``after``/``before`` are item ids, never repeat."""

    def __init__(self, order: str, after_ord: int | None, before_ord: int | None, limit: int):
        self.desc = order == "desc"
        self.after_ord = after_ord
        self.before_ord = before_ord
        self.limit = limit

    def sql(self, where: list[str], params: list[Any]) -> tuple[str, list[Any]]:
        """``after`` means "next page in the requested order"; ``before`` the previous one."""
        where = list(where)
        params = list(params)
        if self.after_ord is not None:
            where.append("ord < ?" if self.desc else "ord > ?")
            params.append(self.after_ord)
        if self.before_ord is not None:
            where.append("ord > ?" if self.desc else "ord < ?")
            params.append(self.before_ord)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        # With only `before`, take the items nearest the cursor, then restore the order.
        nearest_first = self.before_ord is not None and self.after_ord is None
        direction = "DESC" if self.desc != nearest_first else "ASC"
        return f"{clause} ORDER BY ord {direction} LIMIT ?", [*params, self.limit]

    def finish(self, rows: list[Any]) -> list[Any]:
        if self.before_ord is not None and self.after_ord is None:
            rows.reverse()
        return rows
