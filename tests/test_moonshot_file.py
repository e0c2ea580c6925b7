"""moonshot `moonshotFileId`: the file's extracted text, fetched once, as a system message."""

from __future__ import annotations

import httpx
import pytest

from aiproxy_middleware import ConfigError, load_config
from helpers import OPENAI_ANSWER, SSE_ANSWER, sent_json

CHAT_URL = "https://api.moonshot.cn/v1/chat/completions"
FILE_URL = "https://api.moonshot.cn/v1/files/file-abc/content"
CONFIG = {"provider": {"type": "moonshot", "apiTokens": ["sk-secret"],
                       "moonshotFileId": "file-abc"}}
BODY = {"model": "kimi-k2", "messages": [
    {"role": "system", "content": "You are Kimi."}, {"role": "user", "content": "Summarise."}]}


async def test_file_is_fetched_once_and_injected(gateway, respx_mock):
    file = respx_mock.get(FILE_URL).respond(text='{"content": "XLNet is ...", "file_type": "pdf"}')
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gateway(CONFIG)
    for _ in range(2):
        r = await client.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 200 and r.json() == OPENAI_ANSWER
    assert file.call_count == 1
    assert file.calls[0].request.headers["authorization"] == "Bearer sk-secret"
    assert sent_json(chat)["messages"] == [
        {"role": "system", "content": "You are Kimi."},
        {"role": "system", "content": '{"content": "XLNet is ...", "file_type": "pdf"}'},
        {"role": "user", "content": "Summarise."}]


async def test_streamed_request_gets_the_file_too(gateway, respx_mock):
    respx_mock.get(FILE_URL).respond(text="FILE")
    chat = respx_mock.post(CHAT_URL).respond(content=SSE_ANSWER,
                                             headers={"content-type": "text/event-stream"})
    r = await gateway(CONFIG).post("/v1/chat/completions", json={
        "model": "kimi-k2", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n")
    assert sent_json(chat)["messages"][0] == {"role": "system", "content": "FILE"}


@pytest.mark.parametrize("failure, reason", [
    (dict(status_code=404, json={"error": {"message": "no such file"}}), "HTTP 404"),
    (dict(side_effect=httpx.ConnectError("refused sk-secret")), "ConnectError"),
])
async def test_failed_fetch_is_502_and_retried(gateway, respx_mock, failure, reason):
    file = respx_mock.get(FILE_URL)
    if "side_effect" in failure:
        file.side_effect = failure["side_effect"]
    else:
        file.respond(failure["status_code"], json=failure["json"])
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gateway(CONFIG)
    r = await client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 502
    message = r.json()["error"]["message"]
    assert "file-abc" in message and reason in message and "sk-secret" not in r.text
    assert not chat.called
    file.side_effect = None
    file.respond(text="FILE")
    assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
    assert file.call_count == 2


def test_file_id_cannot_be_combined_with_context():
    config = {"provider": dict(CONFIG["provider"], context={
        "fileUrl": "http://files.example/ctx.txt", "serviceName": "files", "servicePort": 80})}
    with pytest.raises(ConfigError, match=r"^provider\.moonshotFileId: cannot be combined"
                                          r" with context"):
        load_config(config)


async def test_without_file_id_nothing_is_fetched(gateway, respx_mock):
    chat = respx_mock.post(CHAT_URL).respond(json=OPENAI_ANSWER)
    client = gateway({"provider": {"type": "moonshot", "apiTokens": ["k"]}})
    assert (await client.post("/v1/chat/completions", json=BODY)).status_code == 200
    assert sent_json(chat)["messages"] == BODY["messages"]
