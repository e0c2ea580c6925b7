"""Everything a provider module may use from the core, in one place.

Modules in `providers/` import from the core only this module (and their own package:
`._compatible`, `.codecs`, ...). It re-exports the provider interface, the config fields
every provider shares, OpenAI's wire Structs, SSE helpers and the small shape, URL and
secret helpers converting providers need; it imports nothing of config, pipeline, runtime
or the middleware, so a provider cannot reach them.
"""

from __future__ import annotations

from aiproxy_middleware.errors import (ConfigError, ProxyError, bad_request, error_type,
                                       upstream_invalid)
from aiproxy_middleware.provider import (Call, Endpoint, NoSettings, Provider, S, StreamConverter,
                                         UpstreamRequest, answer_object, endpoint_path, json_object,
                                         segment, upstream_url)
from aiproxy_middleware.provider_config import ProviderConfig
from aiproxy_middleware.safety.client_headers import forwarded
from aiproxy_middleware.safety.secrets import scrub_text, shown_url
from aiproxy_middleware.shapes import as_dict, as_int, as_list, as_str, decode_json
from aiproxy_middleware.transforms.context import CachedText, insert_system
from aiproxy_middleware.transforms.images import inline_image_urls
from aiproxy_middleware.wire.openai import (AssistantMessage, ChatCompletion, ChatCompletionChunk,
                                            ChatCompletionRequest, ChatMessage, Choice, ChunkChoice,
                                            CompletionTokensDetails, ContentPart, Delta,
                                            EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage,
                                            FunctionCall, PromptTokensDetails, ToolCall, Usage,
                                            cached_usage, embedding, encode, usage)
from aiproxy_middleware.wire.sse import (DONE, ChunkStream, Event, EventParser, JsonEventConverter,
                                         event_limit, event_too_large)
from aiproxy_middleware.wire.streams import WholeEvents

__all__ = [
    # the provider interface
    "Call", "Endpoint", "NoSettings", "Provider", "ProviderConfig", "S", "StreamConverter",
    "UpstreamRequest", "answer_object", "endpoint_path", "json_object", "segment",
    "upstream_url",
    # errors
    "ConfigError", "ProxyError", "bad_request", "error_type", "upstream_invalid",
    # OpenAI's wire format
    "AssistantMessage", "ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest",
    "ChatMessage", "Choice", "ChunkChoice", "CompletionTokensDetails", "ContentPart", "Delta",
    "EmbeddingsRequest", "EmbeddingsResponse", "EmbeddingsUsage", "FunctionCall",
    "PromptTokensDetails", "ToolCall", "Usage", "cached_usage", "embedding", "encode", "usage",
    # streams
    "DONE", "ChunkStream", "Event", "EventParser", "JsonEventConverter", "WholeEvents",
    "event_limit", "event_too_large",
    # shapes, URLs, secrets, headers, message helpers
    "as_dict", "as_int", "as_list", "as_str", "decode_json", "forwarded", "scrub_text",
    "shown_url", "CachedText", "insert_system", "inline_image_urls",
]
