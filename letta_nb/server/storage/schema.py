"""The database schema: the tables, the columns added since the first release and their
indexes (created once those columns exist, so old databases get them too)."""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    config TEXT NOT NULL,
    pending TEXT,
    last_stop_reason TEXT
);
CREATE INDEX IF NOT EXISTS agents_name ON agents (name, ord);
CREATE TABLE IF NOT EXISTS tools (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    agent_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    completed_at REAL,
    status TEXT NOT NULL,
    stop_reason TEXT,
    background INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    otid_key TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    usage TEXT,
    total_duration_ns INTEGER,
    ttft_ns INTEGER,
    conversation_id TEXT
);
CREATE INDEX IF NOT EXISTS runs_agent ON runs (agent_id, ord);
CREATE INDEX IF NOT EXISTS runs_otid ON runs (agent_id, otid_key);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS run_otids (
    agent_id TEXT NOT NULL,
    otid TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (agent_id, otid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    agent_id TEXT NOT NULL,
    summary TEXT,
    model TEXT,
    model_settings TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_message_at REAL,
    deleted_at REAL,
    hidden INTEGER NOT NULL DEFAULT 0,
    pending TEXT
);
CREATE INDEX IF NOT EXISTS conversations_agent ON conversations (agent_id, ord);
CREATE TABLE IF NOT EXISTS frames (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_agent ON messages (agent_id, ord);
CREATE INDEX IF NOT EXISTS messages_run ON messages (run_id, ord);
CREATE INDEX IF NOT EXISTS messages_id ON messages (id);
CREATE TABLE IF NOT EXISTS steps (
    ord INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_run ON steps (run_id, ord);
CREATE INDEX IF NOT EXISTS steps_id ON steps (id);
"""


# Columns added after the first release: (table, column, declaration).
MIGRATIONS = (
    ("runs", "ttft_ns", "INTEGER"),
    ("runs", "conversation_id", "TEXT"),
    ("messages", "conversation_id", "TEXT"),
    ("messages", "copied", "INTEGER NOT NULL DEFAULT 0"),
)
# Indexes on migrated columns: created once the columns exist (old databases too).
INDEXES = """
CREATE INDEX IF NOT EXISTS messages_scope ON messages (agent_id, conversation_id, ord);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (conversation_id, ord);
CREATE INDEX IF NOT EXISTS runs_conversation ON runs (conversation_id, ord);
"""
