"""`aiproxy serve --workers 2` with `redis:`: each worker builds its own stores on the same
redis-server, so a token one worker takes out of rotation is out for the other too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from test_serve_logging import serve, stopped
from upstream_server import ANSWER, Served, read_request

TESTS = Path(__file__).resolve().parent
BAD, GOOD = "sk-worker-bad-01234", "sk-worker-good-56789"
WITHIN = 10.0


class ByToken:
    """An OpenAI-style upstream: 401 for BAD, the canned answer otherwise; records tokens."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_request(receive)
        token = dict(scope["headers"]).get(b"authorization", b"").decode().removeprefix(
            "Bearer ")
        self.tokens.append(token)
        status, body = (401, {"error": {"message": "bad key", "type": "invalid_request_error"}}
                        ) if token == BAD else (200, ANSWER)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def test_two_workers_agree_on_a_token_out_of_rotation(redis_server, tmp_path,
                                                            monkeypatch):
    pids = tmp_path / "pids"
    monkeypatch.setenv("AIPROXY_TEST_PIDS", str(pids))
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the workers import serve_pids
    upstream = ByToken()
    async with Served(upstream) as up:
        server = await serve({
            "routes": [{"path": "/ai", "provider": {
                "type": "openai", "apiTokens": [BAD, GOOD], "openaiCustomUrl": f"{up.url}/v1",
                "failover": {"enabled": True, "failureThreshold": 1, "successThreshold": 1,
                             "healthCheckInterval": 600000, "healthCheckTimeout": 500,
                             "healthCheckModel": "gpt-4o-mini"}}}],
            "redis": {"url": redis_server.url, "timeout": 500},
            "onSummary": "serve_pids:record"}, "--workers", "2", "--log-level", "warning",
            tmp=tmp_path)
        try:
            async def ask() -> int:
                # a connection per request: the kernel hands each to either worker
                async with httpx.AsyncClient(base_url=server.url, timeout=WITHIN) as client:
                    r = await client.post("/ai/v1/chat/completions",
                                          json={"model": "gpt-4o", "messages": [
                                              {"role": "user", "content": "hi"}]})
                    return r.status_code

            while BAD not in upstream.tokens and len(upstream.tokens) < 100:
                await ask()
            assert upstream.tokens.count(BAD) == 1  # out at its first failure
            pids.write_text("")
            statuses = []
            while len(statuses) < 200:  # until both workers have answered a few
                statuses.append(await ask())
                served = [line.split()[0] for line in pids.read_text().splitlines()]
                if len(set(served)) == 2 and min(map(served.count, set(served))) >= 3:
                    break
        finally:
            output = await stopped(server)
    assert len(set(served)) == 2, output
    assert set(statuses) == {200}
    assert upstream.tokens.count(BAD) == 1  # neither worker tried it again
    assert BAD not in output and GOOD not in output
