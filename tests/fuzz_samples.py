"""Samples of what the gateway reads, for the property-based tests (`test_fuzz*.py`) to
mutate: client requests (OpenAI chat and embeddings, Anthropic Messages), OpenAI answers and
chunks, Anthropic stream events, and each converting provider's upstream answers, error
bodies and stream events (`Family`). Short, but with every field the converters read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---- the client's requests, and OpenAI answers ------------------------------------------

CHAT = {
    "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "name": "u", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO",
                                                "detail": "low"}}]},
        {"role": "assistant", "content": None, "reasoning_content": "hmm", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": "and?"}],
    "max_tokens": 10, "max_completion_tokens": 10, "temperature": 0.5, "top_p": 0.9,
    "top_k": 3, "seed": 1, "stop": ["x"], "n": 1, "user": "u", "presence_penalty": 0.1,
    "frequency_penalty": 0.1, "reasoning_effort": "low", "parallel_tool_calls": False,
    "tools": [{"type": "function", "function": {
        "name": "f", "description": "d", "strict": True,
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "response_format": {"type": "json_schema",
                        "json_schema": {"name": "s", "schema": {"type": "object"}}},
    "metadata": {"tag": "a"},  # a field the gateway does not read: relayed as it came
}
# Content parts fewer providers take.
CHAT_PARTS = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
    {"type": "text", "text": "hi"},
    {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                              "filename": "a.pdf"}}]}],
    "tool_choice": "required", "stop": "x"}
EMBED = {"model": "text-embedding-3-small", "input": ["a b", "c"], "encoding_format": "base64",
         "dimensions": 8}
MESSAGES = {
    "model": "claude-x", "max_tokens": 100, "stream": True, "temperature": 0.2,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBO"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "toolu_t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_t1",
             "content": [{"type": "text", "text": "r"}]}]}],
    "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "thinking": {"type": "enabled", "budget_tokens": 5000}, "metadata": {"user_id": "u"},
    "stop_sequences": ["x"], "output_config": {"effort": "low", "format": {
        "type": "json_schema", "schema": {"type": "object"}}},
}

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "stop_reason": "x", "message": {
        "role": "assistant", "content": "hello", "reasoning_content": "hmm",
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
              "prompt_tokens_details": {"cached_tokens": 1}},
}
ERROR = {"error": {"message": "nope", "type": "invalid_request_error", "code": 400}}
CHUNKS = [
    {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "he"},
                  "finish_reason": None}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "c1", "type": "function",
         "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
    {"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": ": 1}"}}]}}]},
    {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                             "matched_stop": "x"}]},
    {"id": "c", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                                         "total_tokens": 7}},
    ERROR,
]
ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {"id": "msg", "type": "message", "role": "assistant",
                                          "content": [], "usage": {"input_tokens": 3,
                                                                   "output_tokens": 1}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_start", "index": 1,
     "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
     "usage": {"output_tokens": 9, "cache_read_input_tokens": 2}},
    {"type": "message_stop"},
]


# ---- what each upstream answers ----------------------------------------------------------


@dataclass
class Family:
    """Samples of an upstream's answers, error bodies and stream events."""

    answers: list[Any]
    errors: list[Any]
    events: list[Any] = field(default_factory=list)
    named: bool = False  # events carry an `event:` line with their type
    aws: dict[str, list[Any]] | None = None  # a binary AWS event stream instead of SSE

    def __add__(self, other: Family) -> Family:
        return Family(self.answers + other.answers, self.errors + other.errors,
                      self.events + other.events, self.named or other.named,
                      self.aws or other.aws)


USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
         "prompt_tokens_details": {"cached_tokens": 1}}
OPENAI = Family(
    answers=[
        {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "usage": USAGE,
         "choices": [{"index": 0, "finish_reason": "stop", "message": {
             "role": "assistant", "content": "hi", "tool_calls": [{
                 "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]},
        {"object": "list", "model": "m", "usage": {"prompt_tokens": 1, "total_tokens": 1},
         "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]}],
    errors=[{"error": {"message": "x", "type": "invalid_request_error", "code": "c"}}],
    events=[
        {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "h"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                 "usage": USAGE}]},  # Moonshot's usage
        {"id": "c", "choices": [], "usage": USAGE}])

CLAUDE = Family(
    answers=[{"id": "msg", "type": "message", "role": "assistant", "model": "claude",
              "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "hi"},
                          {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
              "stop_reason": "tool_use", "usage": {
                  "input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": 3,
                  "cache_creation_input_tokens": 4}}],
    errors=[{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}],
    events=[
        {"type": "message_start", "message": {"id": "msg", "model": "claude",
                                              "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "h"}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "thinking_delta", "thinking": "m"}},
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
         "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}],
    named=True)

GOOGLE_ERROR = {"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT",
                          "details": [{"reason": "API_KEY_INVALID"}]}}
GEMINI_ANSWER = {
    "candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model", "parts": [
        {"text": "hmm", "thought": True}, {"text": "hi"},
        {"functionCall": {"name": "f", "args": {"a": 1}}}]}}],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "thoughtsTokenCount": 3,
                      "cachedContentTokenCount": 1, "totalTokenCount": 6},
    "promptFeedback": {"blockReason": "SAFETY"}, "modelVersion": "g", "responseId": "r"}
GEMINI = Family(
    answers=[GEMINI_ANSWER, {"embeddings": [{"values": [0.5, 1.0]}],
                             "usageMetadata": {"promptTokenCount": 2}}],
    errors=[GOOGLE_ERROR, [GOOGLE_ERROR]],
    events=[GEMINI_ANSWER, GOOGLE_ERROR])
VERTEX_EMBEDDINGS = Family(
    answers=[{"predictions": [{"embeddings": {"values": [0.5, 1.0],
                                              "statistics": {"token_count": 3}}}]}],
    errors=[])

BEDROCK = Family(
    answers=[
        {"output": {"message": {"role": "assistant", "content": [
            {"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "hi"},
            {"toolUse": {"toolUseId": "t", "name": "f", "input": {"a": 1}}}]}},
         "stopReason": "tool_use", "usage": {"inputTokens": 1, "outputTokens": 2,
                                             "cacheReadInputTokens": 3,
                                             "cacheWriteInputTokens": 4}},
        {"embedding": [0.5, 1.0], "inputTextTokenCount": 3},
        {"embeddings": [[0.5, 1.0]]}, {"embeddings": {"float": [[0.5, 1.0]]}}],
    errors=[{"message": "x"}, {"Message": "x"}],
    aws={
        "messageStart": [{"role": "assistant"}],
        "contentBlockStart": [{"contentBlockIndex": 1, "start": {
            "toolUse": {"toolUseId": "t", "name": "f"}}}],
        "contentBlockDelta": [
            {"contentBlockIndex": 0, "delta": {"text": "hi"}},
            {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}},
            {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{}"}}}],
        "contentBlockStop": [{"contentBlockIndex": 1}],
        "messageStop": [{"stopReason": "tool_use"}],
        "metadata": [{"usage": {"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}}]})

COHERE_USAGE = {"billed_units": {"input_tokens": 9, "output_tokens": 4},
                "tokens": {"input_tokens": 10, "output_tokens": 5}}
COHERE = Family(
    answers=[
        {"id": "c", "finish_reason": "TOOL_CALL", "usage": COHERE_USAGE, "message": {
            "role": "assistant", "tool_plan": "plan", "content": [{"type": "text", "text": "hi"}],
            "tool_calls": [{"id": "t", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}},
        {"id": "e", "embeddings": {"float": [[0.5, 1.0]]},
         "meta": {"billed_units": {"input_tokens": 3}}}],
    errors=[{"message": "x"}],
    events=[
        {"type": "message-start", "id": "s", "delta": {"message": {"role": "assistant"}}},
        {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "h"}}}},
        {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "p"}}},
        {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
            "id": "t", "type": "function", "function": {"name": "f", "arguments": ""}}}}},
        {"type": "tool-call-delta", "index": 0,
         "delta": {"message": {"tool_calls": {"function": {"arguments": "{}"}}}}},
        {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": COHERE_USAGE}},
        {"message": "stream failed"}],
    named=True)

QWEN_USAGE = {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7,
              "prompt_tokens_details": {"cached_tokens": 1},
              "output_tokens_details": {"reasoning_tokens": 2}}
QWEN_CHOICE = {"finish_reason": "tool_calls", "index": 0, "message": {
    "role": "assistant", "content": [{"text": "hi"}], "reasoning_content": "hmm",
    "tool_calls": [{"index": 0, "id": "t", "type": "function",
                    "function": {"name": "f", "arguments": {"a": 1}}}]}}
QWEN = Family(
    answers=[{"output": {"choices": [QWEN_CHOICE]}, "usage": QWEN_USAGE, "request_id": "r"},
             {"output": {"text": "hi", "finish_reason": "stop"}, "usage": QWEN_USAGE},
             {"output": {"embeddings": [{"text_index": 0, "embedding": [0.1, 0.2]}]},
              "usage": {"total_tokens": 7}}],
    errors=[{"code": "InvalidParameter", "message": "x", "request_id": "r"}],
    events=[{"output": {"choices": [QWEN_CHOICE]}, "usage": QWEN_USAGE, "request_id": "r"},
            {"code": "Throttling", "message": "x", "status_code": 429}])

DIFY_BASE = {"conversation_id": "conv", "message_id": "m", "created_at": 1705407629}
DIFY_USAGE = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
DIFY = Family(
    answers=[{**DIFY_BASE, "answer": "hi", "metadata": {"usage": DIFY_USAGE}},
             {"workflow_run_id": "w", "data": {"id": "w", "status": "succeeded",
                                               "outputs": {"reply": "hi"}, "total_tokens": 3,
                                               "created_at": 1}}],
    errors=[{"code": "invalid_param", "message": "x", "status": 400}],
    events=[{"event": "message", **DIFY_BASE, "answer": "h"},
            {"event": "agent_message", **DIFY_BASE, "answer": "h"},
            {"event": "text_chunk", "workflow_run_id": "w", "data": {"text": "h"}},
            {"event": "message_end", **DIFY_BASE, "metadata": {"usage": DIFY_USAGE}},
            {"event": "workflow_finished", "workflow_run_id": "w", "data": {
                "status": "succeeded", "outputs": {"reply": "hi"}, "total_tokens": 3}},
            {"event": "error", "status": 400, "code": "c", "message": "x"}])

MINIMAX_MESSAGE = {"sender_type": "BOT", "sender_name": "MM", "text": "hi",
                   "function_call": {"name": "f", "arguments": "{}"}}
MINIMAX_ANSWER = {"id": "i", "created": 1, "model": "abab", "reply": "hi",
                  "choices": [{"finish_reason": "stop", "index": 0,
                               "messages": [MINIMAX_MESSAGE]}],
                  "usage": {"total_tokens": 3, "prompt_tokens": 1, "completion_tokens": 2},
                  "output_sensitive": False, "base_resp": {"status_code": 0, "status_msg": ""}}
MINIMAX_ERROR = {"base_resp": {"status_code": 1004, "status_msg": "auth"}}
MINIMAX = Family(answers=[MINIMAX_ANSWER], errors=[MINIMAX_ERROR],
                 events=[MINIMAX_ANSWER, {"choices": [{"messages": [MINIMAX_MESSAGE]}]},
                         MINIMAX_ERROR])

HUNYUAN_CHOICE = {"Index": 0, "FinishReason": "tool_calls",
                  "Message": {"Role": "assistant", "Content": "hi", "ReasoningContent": "hmm",
                              "ToolCalls": [{"Id": "t", "Index": 0, "Type": "function",
                                             "Function": {"Name": "f", "Arguments": "{}"}}]}}
HUNYUAN_USAGE = {"PromptTokens": 1, "CompletionTokens": 2, "TotalTokens": 3}
HUNYUAN_ERROR = {"Response": {"Error": {"Code": "AuthFailure", "Message": "x"},
                              "RequestId": "r"}}
HUNYUAN = Family(
    answers=[{"Response": {"Id": "i", "Created": 1, "Choices": [HUNYUAN_CHOICE],
                           "Usage": HUNYUAN_USAGE}}, HUNYUAN_ERROR],
    errors=[HUNYUAN_ERROR],
    events=[{"Id": "i", "Created": 1, "Usage": HUNYUAN_USAGE, "Choices": [
        {"FinishReason": "stop", "Delta": {**HUNYUAN_CHOICE["Message"]}}]},
            {"ErrorMsg": {"Code": "x", "Msg": "y"}}, HUNYUAN_ERROR])

SPARK_CALL = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
SPARK = Family(
    answers=[{"code": 0, "message": "Success", "sid": "s", "created": 1,
              "choices": [{"index": 0, "finish_reason": "function_call", "message": {
                  "role": "assistant", "content": "hi", "reasoning_content": "hmm",
                  "tool_calls": SPARK_CALL}}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
             {"code": 10013, "message": "x", "sid": "s"}],
    errors=[{"error": {"message": "x", "code": "10007"}}, {"code": 11200, "message": "x"}],
    events=[{"code": 0, "sid": "s", "id": "s", "created": 1, "choices": [{
        "index": 0, "finish_reason": "stop", "delta": {
            "role": "assistant", "content": "h", "reasoning_content": "m",
            "tool_calls": [{**SPARK_CALL, "index": 0, "id": "t"}]}}],
             "usage": {"prompt_tokens": 1}},
            {"code": 10013, "message": "x"}, {"error": {"message": "x", "code": 1}}])

DEEPL = Family(answers=[{"translations": [{"detected_source_language": "EN", "text": "hi"}]}],
               errors=[{"message": "x", "detail": "y"}])

# By provider `type` (or APISIX name: vertex-ai).
FAMILIES = {"claude": CLAUDE, "gemini": GEMINI, "vertex": GEMINI + CLAUDE + VERTEX_EMBEDDINGS,
            "vertex-ai": VERTEX_EMBEDDINGS + GEMINI, "bedrock": BEDROCK, "cohere": COHERE,
            "qwen": QWEN, "dify": DIFY, "minimax": MINIMAX, "hunyuan": HUNYUAN, "spark": SPARK,
            "deepl": DEEPL}
