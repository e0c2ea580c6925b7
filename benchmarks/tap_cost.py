#!/usr/bin/env python3
"""What `AnswerTap.sse` costs per chunk of a streamed answer, against a loop doing nothing
but `len(chunk)`.

Run from the project root:  .venv/bin/python benchmarks/tap_cost.py [--rounds N]

The stream is the one benchmarks/run.py serves (100 `chat.completion.chunk` events, one per
chunk), plus the final usage chunk of `stream_options.include_usage` and `[DONE]`; a variant
has `"usage": null` in every chunk as OpenAI sends with include_usage. Prints the best of
several rounds, in µs per chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiproxy_middleware.observe.tap import AnswerTap  # noqa: E402

EVENTS = 100
USAGE = {"prompt_tokens": 25, "completion_tokens": 100, "total_tokens": 125,
         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
         "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}


def openai_chunks(usage_null: bool) -> list[bytes]:
    """One SSE event a chunk, as an upstream usually writes them."""
    chunks = []
    for i in range(EVENTS + 1):
        delta: dict[str, Any] = {"content": f"tok{i} "}
        if i == 0:
            delta = {"role": "assistant", "content": ""}
        event: dict[str, Any] = {
            "id": "chatcmpl-bench0000000000000000000001", "object": "chat.completion.chunk",
            "created": 1700000000, "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_bench000",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": "stop" if i == EVENTS else None}]}
        if usage_null:
            event["usage"] = None
        chunks.append(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
    final = {"id": "chatcmpl-bench0000000000000000000001", "object": "chat.completion.chunk",
             "created": 1700000000, "model": "gpt-4o-mini-2024-07-18", "choices": [],
             "usage": USAGE}
    chunks.append(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def baseline(chunks: list[bytes]) -> int:
    size = 0
    for chunk in chunks:
        size += len(chunk)
    return size


def tapped(keep_text: bool) -> Callable[[list[bytes]], int]:
    def run(chunks: list[bytes]) -> int:
        tap = AnswerTap(keep_text=keep_text)
        size = 0
        for chunk in chunks:
            size += len(chunk)
            tap.sse(chunk)
        tap.close()
        assert tap.total_tokens == USAGE["total_tokens"]
        return size
    return run


def per_chunk_us(run: Callable[[list[bytes]], int], chunks: list[bytes], rounds: int,
                 loops: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(loops):
            run(chunks)
        best = min(best, time.perf_counter() - start)
    return best / loops / len(chunks) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--loops", type=int, default=200, help="streams a round")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; {EVENTS + 3} chunks a stream; best of"
          f" {args.rounds} rounds of {args.loops} streams")
    for name, usage_null in (("openai stream", False), ('openai stream, "usage":null', True)):
        chunks = openai_chunks(usage_null)
        base = per_chunk_us(baseline, chunks, args.rounds, args.loops)
        print(f"\n{name}")
        print(f"  baseline len(chunk)   {base:7.3f} µs/chunk")
        for label, keep in (("AnswerTap.sse", False), ("AnswerTap.sse keep_text", True)):
            cost = per_chunk_us(tapped(keep), chunks, args.rounds, args.loops)
            print(f"  {label:<22}{cost:7.3f} µs/chunk  (+{cost - base:.3f} over baseline)")


if __name__ == "__main__":
    main()
