"""What `aiproxy serve` prints (a real server in a subprocess): one summary line per AI
request by default, `--log-format json`, `--log-level`, `logging.summaries: false`, worker
processes, and never a configured key."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aiproxy_middleware import load_config
from aiproxy_middleware.serve import cli
from upstream_server import Served, ServeProcess, Upstream, read_request
from helpers import CHAT

ROOT = Path(__file__).resolve().parent.parent
WITHIN = 10.0
"""Bounds every wait on a server (no test is timed)."""
MOCK = {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}
SUMMARY_LOGGER = "aiproxy_middleware.summary"
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def apisix_route(uri: str, upstream: str, **conf: Any) -> dict[str, Any]:
    return {"uri": uri, "plugins": {"ai-proxy": {
        "provider": "openai", "auth": {"header": {"Authorization": "Bearer sk-apisix-route"}},
        "override": {"endpoint": f"{upstream}/v1/chat/completions"}, **conf}}}


class Serve(ServeProcess):
    """`aiproxy serve` on a config written to `tmp`."""

    def __init__(self, config: dict[str, Any], *args: str, tmp: Path) -> None:
        path = tmp / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        super().__init__(path, *args, log=tmp / "serve.log")


async def serve(config: dict[str, Any], *args: str, tmp: Path) -> Serve:
    # Started off the event loop: a test's upstream runs on it.
    return await asyncio.to_thread(Serve, config, *args, tmp=tmp)


async def stopped(server: Serve) -> str:
    return await asyncio.to_thread(server.stop)


def summary_lines(output: str) -> list[dict[str, str]]:
    """The summary lines of text output, as their `key=value` pairs (quoted values decoded)."""
    found = []
    for line in output.splitlines():
        head, sep, rest = line.partition(f"{SUMMARY_LOGGER}: ")
        if sep:
            found.append({k: json.loads(v) if v.startswith('"') else v
                          for k, v in _PAIR.findall(rest)})
    return found


def json_records(output: str) -> list[dict[str, Any]]:
    """Every line of `--log-format json` output, each of which must be one JSON object."""
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert records and all(isinstance(r, dict) for r in records)
    return records


async def chat(client: httpx.AsyncClient, path: str, **body: Any) -> httpx.Response:
    return await client.post(path, json={**CHAT, **body}, timeout=WITHIN)


# --- text, the default ----------------------------------------------------------------------

async def test_each_ai_request_prints_one_summary_line_by_default(tmp_path):
    async with Served(Upstream()) as upstream:
        server = await serve({"routes": [{"path": "/ai", "provider": MOCK},
                                         apisix_route("/apisix", upstream.url)]}, tmp=tmp_path)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                assert (await chat(client, "/ai/v1/chat/completions")).status_code == 200
                r = await chat(client, "/ai/v1/chat/completions", stream=True)
                assert r.status_code == 200
                # an APISIX route that leaves `logging` unset logs too under `aiproxy serve`
                assert (await chat(client, "/apisix")).status_code == 200
                assert (await client.get("/elsewhere")).status_code == 404  # not an AI request
        finally:
            output = await stopped(server)
    mock, streamed, apisix = summary_lines(output)
    for line, stream in ((mock, "false"), (streamed, "true")):
        assert {k: line[k] for k in ("route", "provider", "endpoint", "model", "requested_model",
                                     "status", "stream", "prompt_tokens", "completion_tokens",
                                     "total_tokens")} == {
            "route": "/ai", "provider": "mock", "endpoint": "chat", "model": "mock-echo-1",
            "requested_model": "gpt-4o", "status": "200", "stream": stream,
            "prompt_tokens": "1", "completion_tokens": "1", "total_tokens": "2"}
        assert float(line["total_ms"]) >= 0
    assert (apisix["route"], apisix["provider"], apisix["status"]) == ("/apisix", "openai", "200")
    assert (apisix["prompt_tokens"], apisix["total_tokens"]) == ("2", "4")


# --- --log-format json ------------------------------------------------------------------------

async def test_log_format_json_prints_one_json_object_per_line(tmp_path):
    server = await serve({"routes": [{"path": "/ai", "provider": MOCK}]}, "--log-format", "json",
                         tmp=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await chat(client, "/ai/v1/chat/completions")).status_code == 200
    finally:
        output = await stopped(server)
    records = json_records(output)
    summaries = [r for r in records if r["logger"] == SUMMARY_LOGGER]
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary["level"] == "info"
    assert {k: summary[k] for k in ("route", "provider", "endpoint", "model", "requested_model",
                                    "status", "stream", "prompt_tokens", "completion_tokens",
                                    "total_tokens")} == {
        "route": "/ai", "provider": "mock", "endpoint": "chat", "model": "mock-echo-1",
        "requested_model": "gpt-4o", "status": 200, "stream": False,
        "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert isinstance(summary["total_ms"], float)
    for record in records:  # uvicorn's lines too
        assert {"time", "level", "logger", "message"} <= record.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
    assert any(r["logger"] == "uvicorn.access" for r in records)


# --- --log-level ------------------------------------------------------------------------------

async def test_log_level_warning_hides_summaries_and_keeps_the_gateways_warnings(tmp_path):
    server = await serve({"routes": [{"path": "/ai", "provider": MOCK}]}, "--log-format", "json",
                         "--log-level", "warning", tmp=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await chat(client, "/ai/v1/chat/completions")).status_code == 200
            # a path with a line feed: refused, and the gateway logs a warning
            assert (await chat(client, "/ai/v1/chat/completions%0a")).status_code == 400
    finally:
        output = await stopped(server)
    records = json_records(output)
    assert [r["level"] for r in records if r["level"] in ("debug", "info")] == []
    warnings = [r for r in records if r["logger"] == "aiproxy_middleware"]
    assert [r["level"] for r in warnings] == ["warning"]
    assert "refused" in warnings[0]["message"]


# --- logging.summaries: false ---------------------------------------------------------------

async def test_summaries_false_in_the_config_silences_them_route_by_route(tmp_path):
    async with Served(Upstream()) as upstream:
        config = {"logging": {"summaries": False}, "routes": [
            {"path": "/quiet", "provider": MOCK},
            apisix_route("/apisix-quiet", upstream.url, logging={"summaries": False}),
            apisix_route("/apisix-unset", upstream.url),
        ]}
        server = await serve(config, tmp=tmp_path)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                for path in ("/quiet/v1/chat/completions", "/apisix-quiet", "/apisix-unset"):
                    assert (await chat(client, path)).status_code == 200
        finally:
            output = await stopped(server)
    assert [line["route"] for line in summary_lines(output)] == ["/apisix-unset"]


def test_serve_turns_on_only_the_apisix_summaries_a_config_leaves_unset():
    config = {"routes": [
        apisix_route("/unset", "http://127.0.0.1:9"),
        apisix_route("/off", "http://127.0.0.1:9", logging={"summaries": False}),
        apisix_route("/payloads", "http://127.0.0.1:9", logging={"payloads": True}),
        apisix_route("/on", "http://127.0.0.1:9", logging={"summaries": True}),
    ]}
    library = {r.path: bool(r.log_summaries) for r in load_config(config).all_apisix()}
    assert library == {"/unset": False, "/off": False, "/payloads": False, "/on": True}
    served = {r.path: r.log_summaries for r in cli.served(load_config(config)).all_apisix()}
    assert served == {"/unset": True, "/off": False, "/payloads": True, "/on": True}


# --- worker processes -----------------------------------------------------------------------

async def test_worker_processes_log_every_request_the_same_way(tmp_path):
    server = await serve({"routes": [{"path": "/ai", "provider": MOCK}]}, "--workers", "2",
                         "--log-format", "json", tmp=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            for i in range(6):
                r = await chat(client, "/ai/v1/chat/completions", model=f"model-{i}")
                assert r.status_code == 200
    finally:
        output = await stopped(server)
    summaries = [r for r in json_records(output) if r["logger"] == SUMMARY_LOGGER]
    assert sorted(r["requested_model"] for r in summaries) == [f"model-{i}" for i in range(6)]
    assert {(r["route"], r["provider"], r["status"]) for r in summaries} == {("/ai", "mock", 200)}


# --- secrets ----------------------------------------------------------------------------------

KEY = "sk-proj/Zq8vN3xLw0Tt5yR2uP"
"""The configured key; its `/` has a JSON-escaped spelling (`\\/`) too."""


async def echo_upstream(scope: dict, receive: Any, send: Any) -> None:
    """An OpenAI-style upstream that quotes the Authorization header it got: in a 401 when
    the question is `401`, else in the answer's text (as is and JSON-escaped)."""
    if scope["type"] != "http":
        return
    body = json.loads(await read_request(receive))
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    if body["messages"][-1]["content"] == "401":
        status, payload = 401, json.dumps({"error": {
            "message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error",
            "code": "invalid_api_key"}}).encode()
    else:
        status = 200
        escaped = auth.replace("/", "\\/")
        payload = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",'
                   b'"choices":[{"index":0,"message":{"role":"assistant","content":"%s | %s"},'
                   b'"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,'
                   b'"total_tokens":7}}' % (auth.encode(), escaped.encode()))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_configured_key_never_appears_in_what_serve_prints(tmp_path, log_format):
    async with Served(echo_upstream) as upstream:
        config = {"logging": {"summaries": True, "payloads": True}, "routes": [
            {"path": "/ai", "provider": {"type": "openai", "apiTokens": [KEY],
                                         "openaiCustomUrl": f"{upstream.url}/v1"}}]}
        server = await serve(config, "--log-format", log_format, "--log-level", "debug",
                             tmp=tmp_path)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                path = "/ai/v1/chat/completions"
                assert (await chat(client, path)).status_code == 200
                assert (await chat(client, path, messages=[
                    {"role": "user", "content": "401"}])).status_code == 401
                # the client itself sends the key, as the model and in its question
                assert (await chat(client, path, model=KEY, messages=[
                    {"role": "user", "content": f"is {KEY} mine?"}])).status_code == 200
        finally:
            output = await stopped(server)
    for spelling in (KEY, KEY.replace("/", "\\/"), KEY.replace("/", "\\\\/"), "Zq8vN3xLw0Tt5yR2uP"):
        assert spelling not in output
    if log_format == "json":
        summaries = [r for r in json_records(output) if r["logger"] == SUMMARY_LOGGER]
    else:
        summaries = summary_lines(output)
    assert [str(s["status"]) for s in summaries] == ["200", "401", "200"]
    assert all(s["provider"] == "openai" for s in summaries)
