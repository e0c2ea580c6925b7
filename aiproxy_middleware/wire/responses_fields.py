"""The Responses API's request fields that are not messages: which fields are taken, which
have no chat equivalent (a 400 naming them), and the converters of tools, tool_choice,
text.format and metadata to OpenAI's chat request (used by `responses.py`).

- tools: a function tool is flat in Responses (`{"type": "function", "name", "description",
  "parameters", "strict"}`) and nested in chat (`{"type": "function", "function": {...}}`).
  `strict` is passed only when the client gave it. `defer_loading: true`, `allowed_callers`
  other than `["direct"]` and `output_schema` have no chat equivalent. Every other tool type
  (web_search, file_search, computer_use_preview, code_interpreter, mcp, image_generation,
  local_shell, shell, apply_patch, custom, namespace, tool_search, ...) runs inside OpenAI:
  a 400 naming `tools[i].type`.
- tool_choice: "none" / "auto" / "required" as they are; `{"type": "function", "name"}` ->
  `{"type": "function", "function": {"name"}}`; `{"type": "allowed_tools", "mode", "tools"}`
  -> only those tools are sent, with `mode` as the choice (what chat providers all take);
  hosted-tool choices are a 400.
- text.format: `text` -> nothing (chat's default); `json_object` -> `response_format:
  {"type": "json_object"}`; `json_schema` (`name`, `schema`, `description`, `strict`) ->
  `response_format: {"type": "json_schema", "json_schema": {...}}`. text.verbosity ->
  chat's `verbosity`.
- Accepted with nothing to forward, since they change no answer: `store` and
  `previous_response_id` (the pipeline keeps responses), `prompt_cache_key` and
  `prompt_cache_retention` (cache hints), `stream_options.include_obfuscation` (padding of
  stream events), `include: ["reasoning.encrypted_content"]` (reasoning comes back as its
  summary text, which a later turn sends back as it is), and fields at their default
  (`background: false`, `truncation: "disabled"`, `service_tier: "auto"`/`"default"`,
  nulls).
- Log probabilities: `include: ["message.output_text.logprobs"]` -> `logprobs: true`, with
  `top_logprobs` (0 to 20) as it is; the answer's token logprobs go to the `output_text`
  parts and the `output_text.delta` / `.done` events. `top_logprobs` without that include
  asks for nothing shown: not sent.
"""

from __future__ import annotations

from typing import Any

from aiproxy_middleware.errors import bad_request
from aiproxy_middleware.wire.openai import encode

MAX_METADATA = 16  # OpenAI's limits on `metadata`: pairs, key and value lengths
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
CHOICE_MODES = ("none", "auto", "required")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
SUMMARIES = ("auto", "concise", "detailed")
VERBOSITIES = ("low", "medium", "high")
LOGPROBS = "message.output_text.logprobs"
ACCEPTED_INCLUDES = ("reasoning.encrypted_content", LOGPROBS)
MAX_TOP_LOGPROBS = 20

NO_EQUIVALENT = {
    "background": (False,), "truncation": ("disabled",), "service_tier": ("auto", "default"),
    "conversation": (), "prompt": (), "max_tool_calls": (),
    "context_management": (), "moderation": (), "image": (), "access_programs": (),
    "background_options": (), "prompt_cache_options": ()}
"""Fields the gateway cannot serve through a chat provider, with the values that ask for
nothing (null is always one): any other value is a 400 naming the field."""

REASONS = {"background": "background responses", "truncation": "truncation: auto",
           "conversation": "stored conversations (use previous_response_id)",
           "prompt": "stored prompt templates", "service_tier": "service tiers",
           "max_tool_calls": "a cap on built-in tool calls"}


def check_unserved(data: dict[str, Any]) -> None:
    """A 400 for a field whose value asks for something no chat provider can do."""
    for name, allowed in NO_EQUIVALENT.items():
        value = data.get(name)
        if value is None or any(value == a and type(value) is type(a) for a in allowed):
            continue
        what = REASONS.get(name, f"'{name}'")
        raise bad_request(f"'{name}' is not supported for this provider ({what}: only"
                          " OpenAI's own Responses API has them)", "unsupported_parameter",
                          name)


def check_include(include: list[str] | None) -> None:
    for i, value in enumerate(include or ()):
        if value not in ACCEPTED_INCLUDES:
            raise bad_request(f"include value {value!r} is not supported for this provider",
                              "unsupported_parameter", f"include[{i}]")


def check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA:
        raise bad_request(f"'metadata' holds {len(metadata)} pairs; at most {MAX_METADATA}"
                          " are allowed", "invalid_value", "metadata")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(f"a metadata key is longer than {MAX_METADATA_KEY} characters",
                              "invalid_value", "metadata")
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(f"a metadata value is longer than {MAX_METADATA_VALUE}"
                              " characters", "invalid_value", "metadata")


# ---- tools ------------------------------------------------------------------------------


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat's tools for the request's function tools (any other tool type is a 400)."""
    return [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]


def _tool(tool: dict[str, Any], where: str) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise bad_request(f"tools of type {kind!r} are not supported for this provider: only"
                          " function tools can be served through its chat API",
                          "unsupported_tool", f"{where}.type")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request("a function tool needs a name", "missing_required_parameter",
                          f"{where}.name")
    if tool.get("defer_loading") not in (None, False):
        raise bad_request("deferred tool loading needs OpenAI's tool search",
                          "unsupported_parameter", f"{where}.defer_loading")
    if tool.get("allowed_callers") not in (None, ["direct"]):
        raise bad_request("programmatic tool calling is not supported for this provider",
                          "unsupported_parameter", f"{where}.allowed_callers")
    if tool.get("output_schema") is not None:
        raise bad_request("tool output schemas are not supported for this provider",
                          "unsupported_parameter", f"{where}.output_schema")
    for key in tool:
        if key not in ("type", "name", "description", "parameters", "strict", "defer_loading",
                       "allowed_callers", "output_schema"):
            raise bad_request(f"unknown parameter '{key}' in a function tool",
                              "unknown_parameter", f"{where}.{key}")
    function: dict[str, Any] = {"name": name}
    description = tool.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise bad_request("a tool description must be a string", "invalid_type",
                              f"{where}.description")
        function["description"] = description
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise bad_request("tool parameters must be a JSON schema object", "invalid_type",
                          f"{where}.parameters")
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    strict = tool.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise bad_request("'strict' must be a boolean", "invalid_type", f"{where}.strict")
        function["strict"] = strict
    return {"type": "function", "function": function}


def tool_choice(choice: Any, tools: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]:
    """Chat's tool_choice and the tools to send, for the request's tool_choice and its
    converted `tools` (None: chat's default)."""
    if choice is None:
        return None, tools
    if isinstance(choice, str):
        if choice not in CHOICE_MODES:
            raise bad_request(f"unsupported tool_choice {choice!r}; use one of"
                              f" {', '.join(CHOICE_MODES)}", "invalid_value", "tool_choice")
        return _needs_tools(choice, tools), tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        name = choice.get("name")
        if not any(t["function"]["name"] == name for t in tools):
            raise bad_request(f"tool_choice names {name!r}, which is not among the function"
                              " tools", "invalid_value", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        mode = choice.get("mode")
        if mode not in ("auto", "required"):
            raise bad_request("tool_choice.mode must be auto or required", "invalid_value",
                              "tool_choice.mode")
        allowed = choice.get("tools")
        if not isinstance(allowed, list):
            raise bad_request("tool_choice.tools must be a list of tools", "invalid_type",
                              "tool_choice.tools")
        names = set()
        for i, tool in enumerate(allowed):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise bad_request("only function tools can be allowed for this provider",
                                  "unsupported_tool", f"tool_choice.tools[{i}]")
            names.add(tool.get("name"))
        kept = [t for t in tools if t["function"]["name"] in names]
        return _needs_tools(mode, kept), kept
    raise bad_request(f"unsupported tool_choice {encode(choice).decode()[:200]}: only"
                      " function tools can be chosen for this provider", "unsupported_tool",
                      "tool_choice")


def _needs_tools(mode: str, tools: list[dict[str, Any]]) -> str | None:
    if tools:
        return mode
    if mode == "required":
        raise bad_request("tool_choice 'required' needs at least one function tool",
                          "invalid_value", "tool_choice")
    return None  # chat providers refuse a tool_choice without tools


# ---- text.format ------------------------------------------------------------------------


def response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat's `response_format` for `text.format` (None: plain text, chat's default)."""
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise bad_request(f"unsupported text.format.type {kind!r}; use text, json_object or"
                          " json_schema", "invalid_value", "text.format.type")
    name, schema = fmt.get("name"), fmt.get("schema")
    if not isinstance(name, str) or not name:
        raise bad_request("a json_schema format needs a name", "missing_required_parameter",
                          "text.format.name")
    if not isinstance(schema, dict):
        raise bad_request("a json_schema format needs a schema object",
                          "missing_required_parameter", "text.format.schema")
    out: dict[str, Any] = {"name": name, "schema": schema}
    for key in ("description", "strict"):
        if fmt.get(key) is not None:
            out[key] = fmt[key]
    return {"type": "json_schema", "json_schema": out}
