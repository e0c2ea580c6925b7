#!/usr/bin/env python3
"""What the repeated-key check (`aiproxy_middleware/repeated_keys.py`) costs per request body,
against decoding the body without it (msgspec's `dict[str, Raw]` envelope, as before).

Run from the project root:  .venv/bin/python benchmarks/repeated_keys_cost.py

Bodies: a small chat (a system and a user message, as benchmarks/run.py sends), a ~2.5 KB
and a ~4.6 KB chat (system prompt, several turns, an image part, two tools) written
compactly as the OpenAI and Anthropic SDKs write them, and the 2.5 KB one with Python's
default separators and ASCII escapes (`requests`' `json=`). Times decoding alone and the
non-streamed chat path's body work (decode, the typed view, encode), before and after.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiproxy_middleware.wire.json_body import JsonBody  # noqa: E402
from aiproxy_middleware.wire.openai import ChatCompletionRequest  # noqa: E402

_envelope = msgspec.json.Decoder(dict[str, msgspec.Raw])


def chat(turns: int) -> dict:
    system = ("You are a helpful assistant for ACME Corp. Answer briefly; cite sources as [1]."
              " Times are UTC: 12:00. URLs like https://example.com/a:b are fine. ") * 3
    messages = [{"role": "system", "content": system}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: the weather in Paris at"
                         f" 10:{i}0? Be precise and explain your reasoning step by step. Héllo"})
        messages.append({"role": "assistant", "content": f"Answer {i}: sunny, about 2{i}"
                         f" degrees. Source: https://weather.example/paris?t=10:{i}0"})
    messages.append({"role": "user", "content": [
        {"type": "text", "text": "And tomorrow?"},
        {"type": "image_url", "image_url": {"url": "https://img.example/x.png", "detail": "low"}}]})
    tools = [{"type": "function", "function": {
        "name": f"get_weather_{k}", "description": "Get the weather for a city at a time",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name"},
            "time": {"type": "string", "description": "ISO time, e.g. 2024-01-01T10:00:00Z"},
            "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}
        for k in range(2)]
    return {"model": "gpt-4o", "messages": messages, "tools": tools, "temperature": 0.7,
            "max_tokens": 512, "stream": False, "user": "u-123"}


def compact(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


BODIES = {
    "small": compact({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"}]}),
    "2.5 KB compact": compact(chat(4)),
    "2.5 KB spaced, ASCII": json.dumps(chat(4)).encode(),
    "4.6 KB compact": compact(chat(12)),
}


def before_decode(data: bytes) -> JsonBody:
    """`JsonBody.decode` as it was before the check: the UTF-8 check and the envelope."""
    if not data.isascii():
        data.decode()
    return JsonBody(_envelope.decode(data), data)


def chat_path(decode):
    def run(data: bytes) -> bytes:
        body = decode(data)
        body.typed(ChatCompletionRequest)
        return body.encode()
    return run


def best(fn, data: bytes, number: int = 1000, rounds: int = 60) -> float:
    return min(timeit.repeat(lambda: fn(data), number=number, repeat=rounds)) / number * 1e6


def main() -> None:
    """Before and after are timed in alternating rounds, so load on the machine falls on
    both alike; each figure is the best round."""
    print(f"{'body':22s} {'bytes':>6s} {'decode before':>14s} {'after':>8s} {'added':>7s}"
          f" {'chat path before':>17s} {'after':>8s} {'added':>7s}")
    for name, data in BODIES.items():
        times: dict[str, list[float]] = {k: [] for k in ("db", "da", "pb", "pa")}
        for _ in range(5):
            times["db"].append(best(before_decode, data))
            times["da"].append(best(JsonBody.decode, data))
            times["pb"].append(best(chat_path(before_decode), data))
            times["pa"].append(best(chat_path(JsonBody.decode), data))
        db, da, pb, pa = (min(times[k]) for k in ("db", "da", "pb", "pa"))
        print(f"{name:22s} {len(data):6d} {db:13.2f}µ {da:7.2f}µ {da - db:6.2f}µ"
              f" {pb:16.2f}µ {pa:7.2f}µ {pa - pb:6.2f}µ")


if __name__ == "__main__":
    main()
