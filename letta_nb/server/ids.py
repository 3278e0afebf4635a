"""Letta-shaped identifiers: prefixes, uuid4 bodies, and the otid derivation seen on the wire."""

from __future__ import annotations

import re
import uuid

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RUN_ID = re.compile(rf"^run-{_UUID}$")
_CONVERSATION_ID = re.compile(rf"^conv-{_UUID}$")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4()}"


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:10]


def is_valid_run_id(run_id: str) -> bool:
    return bool(_RUN_ID.match(run_id))


def is_valid_conversation_id(conversation_id: str) -> bool:
    return bool(_CONVERSATION_ID.match(conversation_id))


def derive_otid(message_id: str, index: int = 0) -> str:
    """Letta's streamed otid: the id's uuid, low 7 bits of the last byte set to ``index``."""
    body = message_id.removeprefix("message-")
    last = int(body[-2:], 16)
    return f"{body[:-2]}{(last & 0x80) | (index & 0x7F):02x}"
