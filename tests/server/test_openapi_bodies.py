"""/openapi.json documents the request bodies (the routes' pydantic models), SSE and error
responses; wrong body types are 422s with Letta's error body, never 500s (schemathesis runs over
this schema)."""

from __future__ import annotations

import httpx
import pytest


def _body_props(spec: dict, op: dict) -> dict:
    """The properties of an operation's JSON body schema ($ref and Optional resolved)."""
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    for alt in schema.get("anyOf", [schema]):
        if "$ref" in alt:
            schema = spec["components"]["schemas"][alt["$ref"].rsplit("/", 1)[-1]]
            break
    return schema["properties"]


def test_openapi_documents_bodies_streams_and_errors(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    send = spec["paths"]["/v1/agents/{agent_id}/messages"]["post"]
    props = _body_props(spec, send)
    assert {"messages", "streaming", "background", "stream_tokens", "include_pings"} <= set(props)
    assert "text/event-stream" in send["responses"]["200"]["content"]
    resume = spec["paths"]["/v1/runs/{run_id}/stream"]["post"]
    assert "starting_after" in _body_props(spec, resume)
    tools = spec["paths"]["/v1/tools/"]["post"]
    assert "source_code" in _body_props(spec, tools)
    for status in ("400", "404", "409", "410", "422"):
        assert (
            "detail"
            in send["responses"][status]["content"]["application/json"]["schema"]["properties"]
        )


@pytest.mark.parametrize(
    "body",
    [
        {"name": ["x"]},
        {"tool_ids": 5},
        {"tool_rules": ["x"]},
        {"llm_config": 7},
        {"llm_config": {"handle": 3}},
        {"tags": [None]},
    ],
)
def test_wrong_agent_body_types_are_422(http: httpx.Client, body: dict) -> None:
    r = http.post("/v1/agents/", json=body)
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)


def test_wrong_send_and_resume_types_are_422(http: httpx.Client, agent_id: str) -> None:
    msg = [{"role": "user", "content": "echo hi"}]
    for extra in ({"max_steps": "many"}, {"streaming": "yes please"}, {"max_steps": True}):
        r = http.post(f"/v1/agents/{agent_id}/messages", json={"messages": msg, **extra})
        assert r.status_code == 422, (extra, r.text)
    r = http.post(
        f"/v1/agents/{agent_id}/messages",
        json={"messages": msg, "streaming": True, "background": True},
    )
    run_id = r.text.split('"run_id":"')[1].split('"')[0]
    assert http.post(f"/v1/runs/{run_id}/stream", json={"starting_after": "x"}).status_code == 422
    huge = http.post(f"/v1/runs/{run_id}/stream", json={"starting_after": 2**70})
    assert huge.status_code == 200 and huge.text == ""  # past the end: closes, no 500
    r = http.post(f"/v1/agents/{agent_id}/messages/cancel", json={"run_ids": "abc"})
    assert r.status_code == 422


def test_405_allow_lists_every_method_of_the_path(http: httpx.Client) -> None:
    r = http.request("OPTIONS", "/v1/agents/")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    r = http.get("/v1/runs/run-00000000-0000-4000-8000-000000001234/stream")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and "detail" in r.json()


def test_tool_source_with_nul_bytes_is_a_400(http: httpx.Client) -> None:
    r = http.post("/v1/tools/", json={"source_code": "def f():\x00 pass"})
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)
