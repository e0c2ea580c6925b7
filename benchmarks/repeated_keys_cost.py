#!/usr/bin/env python3
"""What the repeated-key check (`aiproxy_middleware/repeated_keys.py`) costs per request body,
against decoding the body without it (msgspec's `dict[str, Raw]` envelope, as before).

Run from the project root:  .venv/bin/python benchmarks/repeated_keys_cost.py

Bodies: a small chat (a system and a user message, as benchmarks/run.py sends), a ~2.5 KB
and a ~4.6 KB chat (system prompt, several turns, an image part, two tools) written
compactly as the OpenAI and Anthropic SDKs write them, and the 2.5 KB one with Python's
default separators and ASCII escapes (`requests`' `json=`). Prints the best of 30 rounds.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiproxy_middleware import repeated_keys  # noqa: E402
from aiproxy_middleware.openai import ChatCompletionRequest, JsonBody  # noqa: E402

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


def best(fn, number: int = 2000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=30)) / number * 1e6


def main() -> None:
    print(f"{'body':22s} {'bytes':>6s} {'before':>8s} {'after':>8s} {'check':>8s}"
          f" {'chat path after':>16s}")
    for name, data in BODIES.items():
        before = best(lambda: JsonBody(_envelope.decode(data), data))
        after = best(lambda: JsonBody.decode(data))
        fields = _envelope.decode(data)
        check = best(lambda: repeated_keys.check(data, fields))

        def path() -> bytes:
            body = JsonBody.decode(data)
            body.typed(ChatCompletionRequest)
            return body.encode()
        print(f"{name:22s} {len(data):6d} {before:7.2f}µ {after:7.2f}µ {check:7.2f}µ"
              f" {best(path):15.2f}µ")


if __name__ == "__main__":
    main()
