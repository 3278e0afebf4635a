"""JSON shapes of the Letta API objects, built as plain dicts in Letta's key order.

Plain dicts (not pydantic models) keep the hot streaming path cheap and let the byte layout match
the recorded server exactly (compact JSON, null keys present, second-precision message dates).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

SERVER_VERSION = "0.16.8"
IDENTITY_PATH = "/v1/letta-nb/identity"  # letta_nb only: which server this is (authenticated)
USER_ID = "user-00000000-0000-4000-8000-000000000000"
ORG_ID = "org-00000000-0000-4000-8000-000000000000"

COMPLETED_REASONS = frozenset({"end_turn", "max_steps", "tool_rule", "requires_approval"})

_date_cache: tuple[int, str] = (0, "")


def message_date(ts: float | None = None) -> str:
    """Second-precision ISO date with offset, as Letta stamps messages (cached per second)."""
    global _date_cache
    sec = int(time.time() if ts is None else ts)
    if _date_cache[0] != sec:
        stamp = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        _date_cache = (sec, stamp)
    return _date_cache[1]


def created_at(ts: float) -> str:
    """``created_at`` style: microseconds and a ``Z`` suffix."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def naive_at(ts: float | None) -> str | None:
    """``completed_at`` style: microseconds, no timezone suffix (as recorded)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def envelope(
    message_id: str,
    message_type: str,
    *,
    otid: str | None,
    step_id: str | None,
    run_id: str | None,
    name: str | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The LettaMessage envelope; ``seq_id`` stays None until a background writer sets it."""
    return {
        "id": message_id,
        "date": date or message_date(),
        "name": name,
        "message_type": message_type,
        "otid": otid,
        "sender_id": None,
        "step_id": step_id,
        "is_err": None,
        "seq_id": None,
        "run_id": run_id,
    }


def stop_reason_frame(reason: str) -> dict[str, Any]:
    return {"message_type": "stop_reason", "stop_reason": reason}


def usage_frame(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "message_type": "usage_statistics",
        "completion_tokens": usage["completion_tokens"],
        "prompt_tokens": usage["prompt_tokens"],
        "total_tokens": usage["total_tokens"],
        "step_count": usage["step_count"],
        "run_ids": None,
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "context_tokens": usage["total_tokens"],
    }


def error_message(run_id: str, error_type: str, message: str, detail: str | None) -> dict[str, Any]:
    return {
        "message_type": "error_message",
        "run_id": run_id,
        "error_type": error_type,
        "message": message,
        "detail": detail,
        "seq_id": None,
    }


def tool_return_payload(
    tool_call_id: str, status: str, tool_return: str, *, sandbox: bool = False
) -> dict[str, Any]:
    """``sandbox``: an approved call the server executed; Letta then reports empty stdout and
    stderr lists (``[]``), where in-step tool calls and client returns carry nulls."""
    out: list[str] | None = [] if sandbox else None
    return {
        "tool_return": tool_return,
        "status": status,
        "tool_call_id": tool_call_id,
        "stdout": out,
        "stderr": out,
        "tool_returns": [
            {
                "type": "tool",
                "tool_return": tool_return,
                "status": status,
                "tool_call_id": tool_call_id,
                "stdout": [] if sandbox else None,
                "stderr": [] if sandbox else None,
            }
        ],
    }


def run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A ``Run`` object from a stored run row."""
    return {
        "id": row["id"],
        "status": row["status"],
        "created_at": created_at(row["created_at"]),
        "completed_at": naive_at(row["completed_at"]),
        "agent_id": row["agent_id"],
        "conversation_id": row.get("conversation_id"),
        "base_template_id": None,
        "background": bool(row["background"]),
        "metadata": row["metadata"],
        "request_config": {
            "use_assistant_message": True,
            "assistant_message_tool_name": "send_message",
            "assistant_message_tool_kwarg": "message",
            "include_return_message_types": None,
        },
        "stop_reason": row["stop_reason"],
        "callback_url": None,
        "callback_sent_at": None,
        "callback_status_code": None,
        "callback_error": None,
        "ttft_ns": row.get("ttft_ns"),
        "total_duration_ns": row.get("total_duration_ns"),
    }


def conversation_json(
    row: dict[str, Any], in_context_message_ids: list[str] | None = None
) -> dict[str, Any]:
    """A ``Conversation``; ``in_context_message_ids`` is only filled by retrieve (recorded)."""
    last = row.get("last_message_at")
    return {
        "created_by_id": USER_ID,
        "last_updated_by_id": USER_ID,
        "created_at": created_at(row["created_at"]),
        "updated_at": created_at(row["updated_at"]),
        "id": row["id"],
        "agent_id": row["agent_id"],
        "summary": row.get("summary"),
        "in_context_message_ids": in_context_message_ids or [],
        "isolated_block_ids": [],
        "model": row.get("model"),
        "model_settings": row.get("model_settings"),
        "last_message_at": created_at(last) if last is not None else None,
    }


def system_message(
    message_id: str,
    agent: dict[str, Any],
    conversation_id: str | None,
    previous: int,
    ts: float,
) -> dict[str, Any]:
    """A history's compiled system message: base instructions, memory blocks, metadata (the
    layout Letta compiles; here from the agent's own system prompt and blocks)."""
    cfg = agent["config"]
    blocks = []
    for block in cfg.get("memory_blocks") or []:
        value = str(block.get("value", ""))
        blocks.append(
            f"<{block.get('label')}>\n<description>\n{block.get('description') or ''}\n"
            f"</description>\n<metadata>\n- chars_current={len(value)}\n"
            f"- chars_limit={block.get('limit', 20000)}\n</metadata>\n<value>\n{value}\n"
            f"</value>\n</{block.get('label')}>\n"
        )
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %I:%M:%S %p UTC+0000")
    content = (
        f"<base_instructions>\n{cfg.get('system') or DEFAULT_SYSTEM}\n</base_instructions>\n\n"
        "<memory_blocks>\nThe following memory blocks are currently engaged in your core "
        f"memory unit:\n\n{''.join(blocks)}\n</memory_blocks>\n\n<memory_metadata>\n"
        f"- AGENT_ID: {agent['id']}\n- CONVERSATION_ID: {conversation_id or 'default'}\n"
        f"- System prompt last recompiled: {stamp}\n"
        f"- {previous} previous messages between you and the user are stored in recall memory\n"
        "</memory_metadata>"
    )
    return {
        **envelope(
            message_id,
            "system_message",
            otid=None,
            step_id=None,
            run_id=None,
            date=message_date(ts),
        ),
        "content": content,
    }


def step_json(step: dict[str, Any], model: str) -> dict[str, Any]:
    return {
        "id": step["id"],
        "origin": None,
        "organization_id": ORG_ID,
        "provider_id": None,
        "run_id": step["run_id"],
        "agent_id": step["agent_id"],
        "provider_name": "letta_nb",
        "provider_category": "base",
        "model": model.split("/")[-1],
        "model_handle": model,
        "model_endpoint": MODEL_ENDPOINT,
        "context_window_limit": CONTEXT_WINDOW,
        "completion_tokens": step["completion_tokens"],
        "prompt_tokens": step["prompt_tokens"],
        "total_tokens": step["completion_tokens"] + step["prompt_tokens"],
        "cached_input_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
        "stop_reason": step.get("stop_reason"),
        "tags": [],
        "tid": None,
        "trace_id": None,
        "request_id": None,
        "messages": [],
        "feedback": None,
        "project_id": None,
        "error_type": None,
        "error_data": None,
        "status": step.get("status", "success"),
    }


CONTEXT_WINDOW = 30000
DEFAULT_SYSTEM = "You are a letta_nb embedded agent."
MODEL_ENDPOINT = "letta_nb://embedded"  # a string, as Letta's (its brains need no URL)


def llm_config(handle: str) -> dict[str, Any]:
    return {
        "model": handle.split("/")[-1],
        "display_name": handle,
        "model_endpoint_type": "openai",
        "model_endpoint": MODEL_ENDPOINT,
        "provider_name": "letta_nb",
        "provider_category": "base",
        "model_wrapper": None,
        "context_window": CONTEXT_WINDOW,
        "put_inner_thoughts_in_kwargs": False,
        "handle": handle,
        "temperature": 0.0,
        "max_tokens": 4096,
        "enable_reasoner": False,
        "reasoning_effort": None,
        "max_reasoning_tokens": 0,
        "effort": None,
        "frequency_penalty": None,
        "compatibility_type": None,
        "verbosity": None,
        "tier": None,
        "parallel_tool_calls": False,
        "response_format": None,
        "strict": False,
        "return_logprobs": False,
        "top_logprobs": None,
        "return_token_ids": False,
        "tool_call_parser": None,
    }


EMBEDDING_HANDLE = "letta_nb/no-embedding"


def embedding_config() -> dict[str, Any]:
    return {
        "embedding_endpoint_type": "openai",
        "embedding_endpoint": None,
        "embedding_model": "no-embedding",
        "embedding_dim": 1,
        "embedding_chunk_size": 300,
        "handle": EMBEDDING_HANDLE,
        "batch_size": 32,
        "azure_endpoint": None,
        "azure_version": None,
        "azure_deployment": None,
    }


def model_json(handle: str) -> dict[str, Any]:
    cfg = llm_config(handle)
    return {
        "handle": handle,
        "name": cfg["model"],
        "display_name": handle,
        "provider_type": "openai",
        "provider_name": "letta_nb",
        "model_type": "llm",
        **{k: v for k, v in cfg.items() if k not in ("handle", "display_name", "provider_name")},
        "max_context_window": CONTEXT_WINDOW,
    }


def block_json(agent_id: str, block: dict[str, Any], index: int) -> dict[str, Any]:
    return {
        "id": block.get("id") or f"block-{agent_id.removeprefix('agent-')[:-4]}{index:04x}",
        "label": block.get("label"),
        "value": block.get("value", ""),
        "limit": block.get("limit", 20000),
        "description": block.get("description"),
        "read_only": False,
        "metadata": {},
        "is_template": False,
        "template_name": None,
        "hidden": None,
    }


def agent_json(
    row: dict[str, Any],
    tools: list[dict[str, Any]],
    *,
    pending_approval: dict[str, Any] | None,
    last_stop_reason: str | None,
) -> dict[str, Any]:
    """An ``AgentState`` with every field the SDK requires and Letta's defaults elsewhere."""
    cfg = row["config"]
    agent_id = row["id"]
    blocks = [block_json(agent_id, b, i) for i, b in enumerate(cfg.get("memory_blocks") or [])]
    return {
        "created_by_id": USER_ID,
        "last_updated_by_id": USER_ID,
        "created_at": created_at(row["created_at"]),
        "updated_at": created_at(row["updated_at"]),
        "id": agent_id,
        "name": row["name"],
        "tool_rules": cfg.get("tool_rules") or [],
        "message_ids": [],
        "system": cfg.get("system") or DEFAULT_SYSTEM,
        "agent_type": cfg.get("agent_type") or "letta_v1_agent",
        "llm_config": llm_config(row["model"]),
        "embedding_config": embedding_config(),
        "model": row["model"],
        "embedding": cfg.get("embedding") or EMBEDDING_HANDLE,
        "model_settings": None,
        "compaction_settings": None,
        "response_format": None,
        "description": cfg.get("description"),
        "metadata": cfg.get("metadata"),
        "memory": {
            "agent_type": cfg.get("agent_type") or "letta_v1_agent",
            "git_enabled": False,
            "blocks": blocks,
            "file_blocks": [],
            "prompt_template": "",
        },
        "blocks": blocks,
        "tools": tools,
        "sources": [],
        "tags": cfg.get("tags") or [],
        "tool_exec_environment_variables": [],
        "secrets": [],
        "project_id": None,
        "template_id": None,
        "base_template_id": None,
        "deployment_id": None,
        "entity_id": None,
        "identity_ids": [],
        "identities": [],
        "pending_approval": pending_approval,
        "message_buffer_autoclear": False,
        "enable_sleeptime": None,
        "multi_agent_group": None,
        "managed_group": None,
        "last_run_completion": None,
        "last_run_duration_ms": None,
        "last_stop_reason": last_stop_reason,
        "timezone": "UTC",
        "max_files_open": 5,
        "per_file_view_window_char_limit": 15000,
        "hidden": None,
    }


def tool_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "tool_type": row.get("tool_type", "custom"),
        "description": row.get("description"),
        "source_type": "python",
        "name": row["name"],
        "tags": row.get("tags") or [],
        "source_code": row.get("source_code"),
        "json_schema": row.get("json_schema") or {"name": row["name"], "parameters": {}},
        "args_json_schema": None,
        "return_char_limit": 50000,
        "pip_requirements": None,
        "npm_requirements": None,
        "default_requires_approval": row.get("default_requires_approval"),
        "enable_parallel_execution": False,
        "created_by_id": USER_ID,
        "last_updated_by_id": USER_ID,
        "metadata_": {},
        "project_id": None,
    }
