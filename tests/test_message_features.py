"""Message hygiene (cleanup commands, merging, developer role) and reasoning handling
(reasoningContentMode, promoteThinkingOnEmpty), for passthrough and converting providers."""

from __future__ import annotations

import json

import pytest

from aiproxy_middleware import ConfigError, load_config
from aiproxy_middleware.provider_config import ProviderConfig
from aiproxy_middleware.transforms.messages import (AnswerRules, MessageRules, cleanup,
                                         merge_consecutive)
from aiproxy_middleware.wire.json_body import JsonBody
from helpers import CHAT, sent_json

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
CLAUDE_URL = "https://api.anthropic.com/v1/messages"
DEEPSEEK_URL = "https://api.deepseek.com/chat/completions"


def openai(**fields) -> dict:
    return {"provider": {"type": "openai", "apiTokens": ["k"], **fields}}


def claude(**fields) -> dict:
    return {"provider": {"type": "claude", "apiTokens": ["k"], **fields}}


def rules(**fields) -> AnswerRules:
    return AnswerRules.build(ProviderConfig(type="openai", **fields))  # type: ignore[return-value]


# --------------------------------------------------------------------------- config


def test_fields_are_validated():
    load_config(openai(reasoningContentMode="concat", promoteThinkingOnEmpty=True,
                       mergeConsecutiveMessages=True, contextCleanupCommands=["/clear"],
                       hiclawMode=True))
    assert load_config(openai(reasoningContentMode="IGNORE")).routes[0].answers == \
        AnswerRules("ignore", False)
    with pytest.raises(ConfigError, match=r"^provider\.reasoningContentMode: "
                                          r".*passthrough, ignore, concat"):
        load_config(openai(reasoningContentMode="Concat!"))
    with pytest.raises(ConfigError, match=r"^provider\.contextCleanupCommands"):
        load_config(openai(contextCleanupCommands="/clear"))
    with pytest.raises(ConfigError, match=r"^provider\.hiclawMode"):
        load_config(openai(hiclawMode="yes"))


def test_nothing_configured_builds_no_rules():
    route = load_config(openai()).routes[0]
    assert route.body.messages is None and route.answers is None
    # A provider that does not take `developer` only rewrites it.
    route = load_config(claude()).routes[0]
    assert route.body.messages == MessageRules(frozenset(), False, True) and route.answers is None


def test_hiclaw_mode_turns_on_merge_and_promotion():
    route = load_config(openai(hiclawMode=True)).routes[0]
    assert route.body.messages is not None and route.body.messages.merge
    assert route.answers == AnswerRules("passthrough", True)


# ------------------------------------------------------------------- request side

SYS = {"role": "system", "content": "sys"}


@pytest.mark.parametrize("messages, expected", [
    # Higress's cases: the last command wins; earlier system messages stay.
    ([SYS, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
      {"role": "user", "content": "/clear"}, {"role": "user", "content": "c"}],
     [SYS, {"role": "user", "content": "c"}]),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "/clear"},
      SYS, {"role": "assistant", "content": "b"}, {"role": "user", "content": "/new"},
      {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}],
     [SYS, {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]),
    # No command: unchanged. Only exact string user content counts.
    ([{"role": "user", "content": "/clear please"}, {"role": "assistant", "content": "/clear"},
      {"role": "user", "content": [{"type": "text", "text": "/clear"}]}], None),
    # The command as the last message leaves only the system messages.
    ([SYS, {"role": "user", "content": "a"}, {"role": "user", "content": "/clear"}], [SYS]),
])
def test_cleanup_commands(messages, expected):
    got = cleanup(messages, frozenset({"/clear", "/new"}))
    assert got == (messages if expected is None else expected)
    if expected is None:
        assert got is messages


def test_merge_consecutive():
    parts = [{"type": "text", "text": "p"}]
    messages = [SYS, {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}, {"role": "assistant", "content": parts},
                {"role": "tool", "tool_call_id": "t", "content": "x"},
                {"role": "tool", "tool_call_id": "u", "content": "y"},
                {"role": "user", "content": parts}, {"role": "user", "content": parts}]
    assert merge_consecutive(messages) == [
        SYS, {"role": "user", "content": "a\n\nb"},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}] + parts},
        {"role": "tool", "tool_call_id": "t", "content": "x"},
        {"role": "tool", "tool_call_id": "u", "content": "y"},
        {"role": "user", "content": parts + parts}]
    plain = [SYS, {"role": "user", "content": "a"}]
    assert merge_consecutive(plain) is plain


async def test_request_hygiene_through_the_gateway(gateway, respx_mock):
    route = respx_mock.post(CLAUDE_URL).respond(json={
        "id": "m", "type": "message", "role": "assistant", "model": "c",
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1}})
    client = gateway(claude(contextCleanupCommands=["/reset"], mergeConsecutiveMessages=True))
    r = await client.post("/v1/chat/completions", json={"model": "claude-x", "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "old"},
        {"role": "assistant", "content": "older"}, {"role": "user", "content": "/reset"},
        {"role": "developer", "content": "D"},
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"}]})
    assert r.status_code == 200
    sent = sent_json(route)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one\n\ntwo"}]}]
    assert "S" in json.dumps(sent["system"]) and "D" in json.dumps(sent["system"])


async def test_developer_role_becomes_system_unless_the_provider_takes_it(gateway, respx_mock):
    deepseek = respx_mock.post(DEEPSEEK_URL).respond(json={"choices": []})
    upstream = respx_mock.post(OPENAI_URL).respond(json={"choices": []})
    body = {"model": "m", "messages": [{"role": "developer", "content": "D"},
                                       {"role": "user", "content": "hi"}]}
    await gateway({"provider": {"type": "deepseek", "apiTokens": ["k"]}}).post(
        "/v1/chat/completions", json=body)
    assert sent_json(deepseek)["messages"][0] == {"role": "system", "content": "D"}
    await gateway(openai()).post("/v1/chat/completions", json=body)
    assert sent_json(upstream)["messages"][0] == {"role": "developer", "content": "D"}


async def test_untouched_body_is_sent_as_it_came(gateway, respx_mock):
    deepseek = respx_mock.post(DEEPSEEK_URL).respond(json={"choices": []})
    raw = b'{"model":"m",  "messages":[{"role":"user","content":"hi"}]}'
    await gateway({"provider": {"type": "deepseek", "apiTokens": ["k"]}}).post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert deepseek.calls[0].request.content == raw


def test_rules_apply_only_to_a_body_that_needs_them():
    rules_ = MessageRules(frozenset(), False, True)
    raw = b'{"messages":[{"role":"user","content":"hi"}]}'
    body = JsonBody.decode(raw)
    rules_.apply(body, raw)
    assert body.encode() is raw


# ----------------------------------------------------------------- response side

REASONED = {
    "id": "c", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer",
                                         "reasoning_content": "thought"},
                 "finish_reason": "stop"}]}


def with_content(content):
    answer = json.loads(json.dumps(REASONED))
    answer["choices"][0]["message"]["content"] = content
    return answer


@pytest.mark.parametrize("fields, content, message", [
    ({"reasoningContentMode": "ignore"}, "answer", {"content": "answer"}),
    ({"reasoningContentMode": "concat"}, "answer", {"content": "<think>thought</think>\nanswer"}),
    ({"reasoningContentMode": "concat"}, None, {"content": "<think>thought</think>"}),
    ({"promoteThinkingOnEmpty": True}, None, {"content": "thought"}),
    ({"promoteThinkingOnEmpty": True}, "  \n", {"content": "thought"}),
    ({"promoteThinkingOnEmpty": True}, "answer",
     {"content": "answer", "reasoning_content": "thought"}),
    ({"hiclawMode": True, "reasoningContentMode": "ignore"}, "", {"content": "thought"}),
])
async def test_whole_answer_passthrough_provider(gateway, respx_mock, fields, content, message):
    respx_mock.post(OPENAI_URL).respond(json=with_content(content))
    r = await gateway(openai(**fields)).post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"] == {"role": "assistant", **message}
    assert int(r.headers["content-length"]) == len(r.content)


CLAUDE_ANSWER = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
    "content": [{"type": "thinking", "thinking": "thought", "signature": "s"}],
    "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 2}}


@pytest.mark.parametrize("fields, message", [
    ({}, {"content": "", "reasoning_content": "thought"}),
    ({"reasoningContentMode": "ignore"}, {"content": ""}),
    ({"reasoningContentMode": "concat"}, {"content": "<think>thought</think>"}),
    ({"promoteThinkingOnEmpty": True}, {"content": "thought"}),
])
async def test_whole_answer_converting_provider(gateway, respx_mock, fields, message):
    respx_mock.post(CLAUDE_URL).respond(json=CLAUDE_ANSWER)
    r = await gateway(claude(**fields)).post("/v1/chat/completions",
                                             json=dict(CHAT, model="claude-x"))
    got = r.json()["choices"][0]["message"]
    assert got.get("content") == message["content"]
    assert got.get("reasoning_content") == message.get("reasoning_content")


async def test_errors_and_anthropic_calls_are_left_alone(gateway, respx_mock):
    respx_mock.post(OPENAI_URL).respond(json=REASONED)
    client = gateway(openai(reasoningContentMode="ignore"))
    r = await client.post("/v1/messages", json={"model": "m", "max_tokens": 10,
                                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert [b["type"] for b in r.json()["content"]] == ["thinking", "text"]


# --- streams


def chunk(delta: dict, finish: str | None = None, index: int = 0) -> bytes:
    return b"data: " + json.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"


USAGE = (b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
         b'"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n')
DONE = b"data: [DONE]\n\n"

THINK_THEN_ANSWER = (chunk({"role": "assistant", "content": ""})
                     + chunk({"reasoning_content": "tho"}) + chunk({"reasoning_content": "ught"})
                     + chunk({"content": "ans"}) + chunk({"content": "wer"})
                     + chunk({}, "stop") + USAGE + DONE)
THINK_ONLY = (chunk({"role": "assistant", "content": ""})
              + chunk({"reasoning_content": "tho"}) + chunk({"reasoning_content": "ught"})
              + chunk({}, "stop") + USAGE + DONE)


def parse(body: bytes) -> list:
    out = []
    for event in body.decode().split("\n\n"):
        if event.startswith("data: "):
            data = event[6:]
            out.append(None if data == "[DONE]" else json.loads(data))
    return out


def texts(body: bytes) -> tuple[str, str]:
    """(content, reasoning) of a chunk stream."""
    content = reasoning = ""
    for c in parse(body):
        for choice in (c or {}).get("choices", []):
            content += choice["delta"].get("content") or ""
            reasoning += choice["delta"].get("reasoning_content") or ""
    return content, reasoning


def feed(stream, data: bytes, size: int) -> bytes:
    out = b"".join(stream.feed(data[i:i + size]) for i in range(0, len(data), size))
    return out + stream.close()


CASES = [
    ({"reasoningContentMode": "ignore"}, THINK_THEN_ANSWER, ("answer", "")),
    ({"reasoningContentMode": "concat"}, THINK_THEN_ANSWER,
     ("<think>thought</think>\nanswer", "")),
    ({"reasoningContentMode": "concat"}, THINK_ONLY, ("<think>thought</think>", "")),
    ({"promoteThinkingOnEmpty": True}, THINK_THEN_ANSWER, ("answer", "thought")),
    ({"promoteThinkingOnEmpty": True}, THINK_ONLY, ("thought", "")),
    ({"promoteThinkingOnEmpty": True, "reasoningContentMode": "ignore"}, THINK_THEN_ANSWER,
     ("answer", "")),
]


@pytest.mark.parametrize("size", [1, 7, 10_000])
@pytest.mark.parametrize("fields, sse, expected", CASES)
def test_stream_fed_in_pieces(fields, sse, expected, size):
    out = feed(rules(**{_snake(k): v for k, v in fields.items()}).stream(None), sse, size)
    assert texts(out) == expected
    events = parse(out)
    assert events[-1] is None and events.count(None) == 1
    assert events[-2]["usage"]["total_tokens"] == 3  # the usage chunk stays last
    finish = [i for i, c in enumerate(events) if c and c["choices"]
              and c["choices"][0]["finish_reason"]]
    last_text = max(i for i, c in enumerate(events) if c and c["choices"]
                    and c["choices"][0]["delta"].get("content"))
    assert last_text < finish[0]  # nothing is said after the finish


def test_promoted_thinking_is_held_back_until_content():
    stream = rules(promote_thinking_on_empty=True).stream(None)
    assert texts(stream.feed(chunk({"reasoning_content": "tho"}))) == ("", "")
    assert texts(stream.feed(chunk({"content": "a"}))) == ("a", "tho")
    assert texts(stream.feed(chunk({"reasoning_content": "more"}))) == ("", "more")


def test_stream_without_done_ends_choices_at_close():
    stream = rules(promote_thinking_on_empty=True).stream(None)
    out = stream.feed(chunk({"reasoning_content": "x"}, index=1))
    out += stream.close()
    assert texts(out) == ("x", "")
    assert parse(out)[-1]["choices"][0]["index"] == 1


@pytest.mark.parametrize("index", [[0], {"a": 1}])
def test_stream_choice_index_of_the_wrong_type_reads_as_0(index):
    """Found by test_fuzz: an index that is a list or object was a TypeError (unhashable)."""
    stream = rules(reasoning_content_mode="concat").stream(None)
    out = feed(stream, chunk({"reasoning_content": "x"}, index=index) + DONE, 10_000)
    assert texts(out) == ("<think>x</think>", "")
    assert [c["choices"][0]["index"] for c in parse(out)[:-1]] == [index, 0]


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


@pytest.mark.parametrize("fields, sse, expected", CASES)
async def test_stream_passthrough_provider(gateway, respx_mock, fields, sse, expected):
    respx_mock.post(OPENAI_URL).respond(content=sse, headers={
        "content-type": "text/event-stream", "x-request-id": "r1"})
    r = await gateway(openai(**fields)).post("/v1/chat/completions", json=dict(CHAT, stream=True))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.headers["x-request-id"] == "r1"  # a passthrough stream keeps its headers
    assert texts(r.content) == expected
    assert parse(r.content)[-1] is None


def claude_sse(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def claude_stream(text: str | None) -> bytes:
    events = [{"type": "message_start", "message": {
        "id": "msg_s", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "tho"}},
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "thinking_delta", "thinking": "ught"}},
        {"type": "content_block_stop", "index": 0}]
    if text is not None:
        events += [{"type": "content_block_start", "index": 1,
                    "content_block": {"type": "text", "text": ""}},
                   {"type": "content_block_delta", "index": 1,
                    "delta": {"type": "text_delta", "text": text}},
                   {"type": "content_block_stop", "index": 1}]
    events += [{"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 5}}, {"type": "message_stop"}]
    return claude_sse(*events)


@pytest.mark.parametrize("fields, text, expected", [
    ({}, "answer", ("answer", "thought")),
    ({"reasoningContentMode": "ignore"}, "answer", ("answer", "")),
    ({"reasoningContentMode": "concat"}, "answer", ("<think>thought</think>\nanswer", "")),
    ({"reasoningContentMode": "concat"}, None, ("<think>thought</think>", "")),
    ({"promoteThinkingOnEmpty": True}, None, ("thought", "")),
    ({"promoteThinkingOnEmpty": True}, "answer", ("answer", "thought")),
])
async def test_stream_converting_provider(gateway, respx_mock, fields, text, expected):
    respx_mock.post(CLAUDE_URL).respond(content=claude_stream(text),
                                        headers={"content-type": "text/event-stream"})
    r = await gateway(claude(**fields)).post("/v1/chat/completions",
                                             json=dict(CHAT, model="claude-x", stream=True,
                                                       stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert texts(r.content) == expected
    events = parse(r.content)
    assert events[-1] is None and events[-2]["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("size", [1, 5])
def test_converting_provider_stream_fed_byte_by_byte(size):
    from aiproxy_middleware.providers.claude import Claude
    from aiproxy_middleware.provider import Call, Endpoint

    config = load_config(claude(promoteThinkingOnEmpty=True))
    route = config.routes[0]
    provider: Claude = route.provider  # type: ignore[assignment]
    call = Call(Endpoint.CHAT, JsonBody({}), None, "claude-x", "claude-x", "k", True, "", "",
                include_usage=True)
    stream = route.answers.stream(provider.stream_converter(call))  # type: ignore[union-attr]
    out = feed(stream, claude_stream(None), size)
    assert texts(out) == ("thought", "")
    assert parse(out)[-1] is None


async def test_anthropic_stream_is_left_alone(gateway, respx_mock):
    respx_mock.post(OPENAI_URL).respond(content=THINK_THEN_ANSWER,
                                        headers={"content-type": "text/event-stream"})
    r = await gateway(openai(reasoningContentMode="concat")).post("/v1/messages", json={
        "model": "m", "max_tokens": 10, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert b"thinking_delta" in r.content and b"<think>" not in r.content


async def test_original_protocol_is_left_alone(gateway, respx_mock):
    respx_mock.post(OPENAI_URL).respond(json=REASONED)
    r = await gateway(openai(protocol="original", reasoningContentMode="ignore")).post(
        "/v1/chat/completions", json=CHAT)
    assert r.json() == REASONED
