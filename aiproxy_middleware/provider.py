"""What a provider is to the core: the interface every module in `providers/` implements.

The core decodes the client's request, maps the model, picks a token and applies
customSettings; the provider turns that `Call` into the upstream request, and converts
the upstream's answer back. A provider that speaks OpenAI's format converts nothing.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, get_args, get_origin)
from urllib.parse import urlsplit

import httpx
import msgspec
from msgspec import Struct

from aiproxy_middleware.errors import ConfigError, ProxyError, upstream_invalid
from aiproxy_middleware.provider_config import ProviderConfig
from aiproxy_middleware.safety.client_headers import FORWARDED
from aiproxy_middleware.safety.secrets import watch
from aiproxy_middleware.safety.urls import configured_path, encode_path, segment, upstream_url
from aiproxy_middleware.shapes import decode_json
from aiproxy_middleware.transforms.fetch_policy import DEFAULT_POLICY, ImagePolicy

__all__ = ["Call", "Endpoint", "Provider", "StreamConverter", "UpstreamRequest", "NoSettings",
           "answer_object", "json_object", "segment", "endpoint_path", "upstream_url"]

if TYPE_CHECKING:
    from aiproxy_middleware.wire.json_body import JsonBody
    from aiproxy_middleware.wire.openai import ChatCompletionRequest, EmbeddingsRequest


class Endpoint(enum.Enum):
    """The APIs the gateway serves, by the path suffix that selects them.

    MESSAGES is Anthropic's Messages API, answered natively by a provider with an
    `anthropic_path`, and through its chat API (converted both ways) by any other.
    RESPONSES is OpenAI's Responses API: a provider whose `responses_path()` names one gets
    the call as it is (a `Call` with this endpoint); any other is bridged through its chat
    API (pipeline/responses_bridge.py).
    """

    CHAT = "/v1/chat/completions"
    EMBEDDINGS = "/v1/embeddings"
    MESSAGES = "/v1/messages"
    RESPONSES = "/v1/responses"

    # Members are singletons compared by identity: hashed by identity too, in C (Enum's
    # own __hash__ is a Python call, and endpoints are looked up in sets and dicts on
    # every request).
    __hash__ = object.__hash__

    @classmethod
    def for_path(cls, path: str) -> Endpoint | None:
        for suffix, endpoint in _SUFFIXES:
            if path.endswith(suffix):
                return endpoint
        return None


_SUFFIXES = tuple((e.value, e) for e in Endpoint)
"""Each endpoint by the path it ends (members bound once: on 3.11 reading one from its
class goes through EnumType's slow attribute path)."""


@dataclass(slots=True)
class Call:
    """One client request, decoded and mapped, as a provider sees it."""

    endpoint: Endpoint | None
    """The OpenAI API called; None under `protocol: original`."""
    body: JsonBody
    """The client's JSON body, with model mapping and customSettings applied."""
    request: ChatCompletionRequest | EmbeddingsRequest | None
    """The body's typed view (protocol `openai` only)."""
    model: str
    """The model to ask the provider for, after modelMapping."""
    requested_model: str
    token: str
    """The API token chosen for this request ("" when none is configured)."""
    stream: bool
    path: str
    """The request path, less the route's prefix."""
    query: str
    client_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    include_usage: bool = False
    """A streamed chat answer ends with a usage chunk: the client asked, or did not say."""
    answer: bytes | None = None
    """An OpenAI JSON answer that `prepare` already made (from several upstream calls);
    the relay sends it and makes no call of its own."""
    method: str = "POST"
    """The client's method (protocol `original` forwards it: `GET /v1/files`)."""
    image_policy: ImagePolicy = DEFAULT_POLICY
    """Which image URLs `prepare` may fetch (the config's `imageFetch`)."""
    consumer: str | None = None
    """The caller's consumer name, when known (the gateway's key auth, the app's
    `authenticate` hook, or an `x-mse-consumer` header from an auth layer in front)."""


@dataclass(slots=True)
class UpstreamRequest:
    """What to send to the provider."""

    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


class StreamConverter(Protocol):
    """Turns a provider's streamed bytes into OpenAI `chat.completion.chunk` SSE bytes."""

    def feed(self, data: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class NoSettings(Struct, forbid_unknown_fields=True):
    """A provider with no fields of its own."""


def endpoint_path(path: str, field: str) -> str:
    """A configured URL's path, encoded for `Provider.url`; ConfigError naming `field` for
    a path with `.` or `..` segments."""
    try:
        return configured_path(path)
    except ValueError as exc:
        raise ConfigError(f"{field}: {exc}") from None


def answer_object(body: bytes, provider: str) -> dict[str, Any]:
    """A provider's successful JSON answer, which must be an object; anything else is a 502."""
    try:
        value = decode_json(body)
    except msgspec.DecodeError:
        raise upstream_invalid(f"{provider} answered with invalid JSON") from None
    if not isinstance(value, dict):
        raise upstream_invalid(f"{provider}'s answer is not a JSON object")
    return value


def json_object(body: bytes) -> dict[str, Any] | None:
    """A body's JSON object, or None when it is not one (an HTML error page, say)."""
    try:
        value = decode_json(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


S = TypeVar("S", bound=Struct)
"""A provider's settings Struct."""


_CONFIGURED_SECRETS: dict[int, tuple[weakref.ref[Any], tuple[str, ...], tuple[str, ...]]] = {}
"""Each provider's configured secrets, worked out once, by the provider's id with a weak
reference to it (an id is reused once its object is gone: the reference tells) and the
`extra_secrets` they were made from. Kept outside the provider, whose state is its config's;
a plain dict, as every answer's scrubber asks (a WeakKeyDictionary lookup runs in Python).
At most 256 providers, then cleared."""


class Provider(Generic[S]):
    """One configured upstream service. Subclasses live in `providers/`, one per module.

    A subclass names its settings Struct as the type argument (`class Gemini(Provider[Settings])`):
    that types `self.settings`, and `__init_subclass__` makes it the class's `Settings`, what
    the config is validated against.
    """

    name: ClassVar[str]
    """The config `type` that selects this provider."""
    Settings: ClassVar[type[Struct]] = NoSettings
    """The provider's own config fields (camelCase in config), validated at load."""
    requires_token: ClassVar[bool] = True
    max_tokens: ClassVar[int | None] = None
    """How many `apiTokens` the provider takes; None for any number."""
    endpoints: frozenset[Endpoint] = frozenset({Endpoint.CHAT, Endpoint.EMBEDDINGS})
    """The OpenAI APIs the provider offers (set on the class; an instance may narrow it, as
    hunyuan's native mode does)."""
    anthropic_path: ClassVar[str | None] = None
    """The path of the provider's native Anthropic Messages API, if it has one: inbound
    `/v1/messages` calls go there untouched but for the model and auth."""
    accepts_developer_role: ClassVar[bool] = False
    """The provider takes OpenAI's `developer` message role; for any other, the gateway
    sends `developer` messages as `system` ones."""
    settings_column: ClassVar[str | None] = None
    """Its column of the customSettings name table under `protocol: original`."""
    example: ClassVar[dict[str, Any]] = {}
    """The config fields (as spelled in config) a minimal working config needs besides
    `type` and `apiTokens`: what the test suite's checks of every provider build it with,
    so that a new provider needs no entry in a list elsewhere."""
    client_headers: ClassVar[frozenset[bytes]] = FORWARDED
    """The client's request headers (lower case) that go upstream when the client speaks
    the provider's own API (`protocol: original`, APISIX routes): the gateway's allow-list,
    plus what the provider's API documents as the caller's own choice (see
    `client_headers.py`)."""

    prepares: ClassVar[bool] = False
    """Whether `prepare` does anything (a class that defines it does, unless it says
    `prepares = False` beside it): the relay skips the await of a `prepare` that does
    nothing."""

    extra_secrets: tuple[str, ...] = ()
    """More configured secrets than the provider's own (an APISIX route's `auth.header`
    and `auth.query` values, set when the route is built)."""

    settings: S

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "prepare" in cls.__dict__ and "prepares" not in cls.__dict__:
            cls.prepares = True
        # (the type argument of a generic base, `Provider[X]` or `OpenAICompatible[X]`; a
        # subclass of a concrete provider inherits its Settings or names its own)
        for base in cls.__dict__.get("__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, Provider):
                (argument,) = get_args(base)
                if isinstance(argument, type) and issubclass(argument, Struct):
                    cls.Settings = argument

    def __init__(self, config: ProviderConfig, settings: S) -> None:
        self.config = config
        self.settings = settings
        self.timeout = config.timeout / 1000
        watch(self)

    def secrets(self) -> list[str]:
        """The credentials configured for this provider (its apiTokens, its own keys, and
        `extra_secrets`): kept out of relayed error bodies and out of the logs (see
        `secrets.py`). A provider with keys of its own adds them."""
        # (worked out once: every answer's scrubber asks; `extra_secrets` is set after
        # __init__, so the result is kept with the tuple it was made from)
        kept = _CONFIGURED_SECRETS.get(id(self))
        if kept is not None and kept[0]() is self and kept[1] is self.extra_secrets:
            return list(kept[2])
        found = [*(t for t in self.config.api_tokens if t), *self.extra_secrets]
        try:
            password = urlsplit(self.base_url()).password
        except (NotImplementedError, ValueError):
            password = None
        if password:
            found.append(password)
        if len(_CONFIGURED_SECRETS) >= 256:
            _CONFIGURED_SECRETS.clear()
        _CONFIGURED_SECRETS[id(self)] = (weakref.ref(self), self.extra_secrets, tuple(found))
        return found

    @property
    def host(self) -> str:
        """The upstream host (and port), as error messages name it: never a URL's user
        name or password."""
        return urlsplit(self.base_url()).netloc.rpartition("@")[2]

    def base_url(self) -> str:
        """Scheme and host (and any base path) the requests go to."""
        raise NotImplementedError

    async def prepare(self, call: Call, client: httpx.AsyncClient) -> None:
        """Work a call needs before `request` that waits on the network (fetching images, or
        the upstream calls themselves when one client request takes several: `call.answer`)."""

    def responses_path(self) -> str | None:
        """The path (and query) of the provider's own OpenAI Responses API, if it has one:
        inbound `/v1/responses` calls go there as sent but for the model and auth (a `Call`
        with `Endpoint.RESPONSES`, which `request` then serves). None (the default) bridges
        them through the provider's chat API."""
        return None

    def request(self, call: Call) -> UpstreamRequest:
        """The upstream request for an OpenAI-protocol call."""
        raise NotImplementedError

    def url(self, path: str, query: str = "", base: str | None = None) -> str:
        """The upstream URL for an encoded `path` below the path of the base URL (`base`,
        or `base_url()`), with `query`. Nothing in `path` or `query` can change the base
        URL's scheme, host, port or path (see `urls`)."""
        return upstream_url(base or self.base_url(), path, query)

    def client_url(self, call: Call, query: str | None = None, base: str | None = None) -> str:
        """The upstream URL for the client's own path and query (`protocol: original`)."""
        return upstream_url(base or self.base_url(), encode_path(call.path),
                            call.query if query is None else query)

    def original_request(self, call: Call) -> UpstreamRequest:
        """The upstream request under `protocol: original`: the client's path and body."""
        return UpstreamRequest(self.client_url(call), self.auth_headers(call),
                               call.body.encode(), call.method)

    def auth_headers(self, call: Call) -> dict[str, str]:
        """The headers that authenticate a request with the chosen token."""
        return {"Authorization": f"Bearer {call.token}"} if call.token else {}

    def convert_response(self, call: Call, body: bytes) -> bytes | None:
        """The OpenAI-format body for a successful answer; None keeps the upstream's bytes."""
        return None

    def stream_converter(self, call: Call) -> StreamConverter | None:
        """A converter for a streamed answer; None relays the upstream's bytes as they are."""
        return None

    def convert_error(self, call: Call, status: int, body: bytes) -> ProxyError | None:
        """The status and OpenAI error body for an upstream error; None keeps the upstream's."""
        return None

    def client(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        """The HTTP client for this provider's calls: the gateway's shared one by default."""
        return shared
