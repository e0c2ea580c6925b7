"""Google service-account OAuth, shared by the Vertex AI providers (`vertex`, APISIX's `vertex-ai`).

A service-account key signs an RS256 JWT assertion (iss = client_email, aud = token_uri,
scope, iat, exp = iat + 3600), traded at `token_uri` with the grant type
`urn:ietf:params:oauth:grant-type:jwt-bearer` for an access token (Google's "Using OAuth
2.0 for Server to Server Applications"). The token is cached for a TTL the caller's policy
computes from `expires_in`; concurrent requests wait for one exchange; a failed exchange is
a 502 `auth_failed` whose message names no secret. Requests get `Authorization: Bearer`
from a transport wrapped around the gateway's shared client.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aiproxy_middleware.provider_api import ConfigError, ProxyError, decode_json, encode, scrub_text

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_LIFETIME = 3600
DEFAULT_EXPIRES_IN = 3600
"""The token's lifetime when the token endpoint's answer gives no `expires_in`."""

TtlPolicy = Callable[[float], float]
"""Seconds to reuse a token, given its `expires_in`."""


def _now() -> float:
    """The wall clock (a function so tests can move it)."""
    return time.time()


class ServiceAccount:
    """The fields of a service-account key that the token exchange uses (the key never
    appears in its repr)."""

    __slots__ = ("email", "key", "key_id", "token_uri", "scope", "pem_lines")

    def __init__(self, email: str, key: rsa.RSAPrivateKey, key_id: str | None,
                 token_uri: str, scope: str = SCOPE, pem_lines: tuple[str, ...] = ()) -> None:
        self.email = email
        self.key = key
        self.key_id = key_id
        self.token_uri = token_uri
        self.scope = scope
        self.pem_lines = pem_lines
        """The key's PEM body lines: secrets to keep out of answers and logs."""

    def __repr__(self) -> str:
        return f"<service account {self.email}>"


def service_account(raw: str | dict[str, Any], *, default_token_uri: str | None = None,
                    key_scope: bool = False) -> ServiceAccount:
    """A service account from its key file's JSON text (or the decoded object).

    Raises ConfigError with a reason only (the caller prefixes the field path), never
    quoting the key. `token_uri` is required unless `default_token_uri` is given; with
    `key_scope`, the key's own `scope` (a string, or a list joined with spaces) replaces
    the cloud-platform scope.
    """
    if isinstance(raw, str):
        try:
            raw = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise ConfigError("not valid JSON (expected a service-account key file's"
                              " contents)") from None
    if not isinstance(raw, dict):
        raise ConfigError("expected a service-account key JSON object")
    token_uri = raw.get("token_uri") or default_token_uri
    fields = {"client_email": raw.get("client_email"), "private_key": raw.get("private_key"),
              "token_uri": token_uri}
    missing = [name for name, value in fields.items() if not isinstance(value, str) or not value]
    if missing:
        raise ConfigError(f"the service-account key lacks {', '.join(missing)}")
    assert isinstance(token_uri, str)
    uri = urlsplit(token_uri)
    if uri.scheme not in ("http", "https") or not uri.netloc:
        raise ConfigError("token_uri is not an http(s) URL")
    try:
        key = serialization.load_pem_private_key(raw["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("private_key is not an unencrypted PEM RSA private key")
    scope = SCOPE
    if key_scope and raw.get("scope"):
        found = raw["scope"]
        if isinstance(found, list) and all(isinstance(s, str) for s in found):
            found = " ".join(found)
        if not isinstance(found, str):
            raise ConfigError("scope must be a string or a list of strings")
        scope = found
    key_id = raw.get("private_key_id")
    pem_lines = tuple(line.strip() for line in raw["private_key"].splitlines()
                      if line.strip() and not line.startswith("-----"))
    return ServiceAccount(raw["client_email"], key, key_id if isinstance(key_id, str) else None,
                          token_uri, scope, pem_lines)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signed_jwt(account: ServiceAccount, now: int) -> str:
    """The RS256-signed assertion that asks `token_uri` for an access token."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if account.key_id:
        header["kid"] = account.key_id
    claims = {"iss": account.email, "scope": account.scope, "aud": account.token_uri,
              "iat": now, "exp": now + JWT_LIFETIME}
    signing_input = _b64(encode(header)) + b"." + _b64(encode(claims))
    signature = account.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return (signing_input + b"." + _b64(signature)).decode()


def auth_failed(reason: str) -> ProxyError:
    """The 502 a request fails with when no access token could be had."""
    return ProxyError(502, f"could not get a Vertex AI access token: {reason}", "upstream_error",
                      "auth_failed")


class TokenSource:
    """An access token for a service account, cached for `ttl(expires_in)` seconds from the
    exchange, refreshed by one request at a time."""

    def __init__(self, account: ServiceAccount, ttl: TtlPolicy, timeout: float) -> None:
        self.account = account
        self.ttl = ttl
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def secrets(self) -> list[str]:
        """The key's PEM lines and the access token in use."""
        return [*self.account.pem_lines, *((self._token,) if self._token else ())]

    def _valid(self) -> bool:
        return self._token is not None and _now() < self._expires

    async def get(self, client: httpx.AsyncClient) -> str:
        if not self._valid():
            async with self._lock:
                if not self._valid():
                    await self._refresh(client)
        assert self._token is not None
        return self._token

    async def _refresh(self, client: httpx.AsyncClient) -> None:
        now = _now()
        assertion = signed_jwt(self.account, int(now))
        try:
            response = await client.post(self.account.token_uri, timeout=self.timeout,
                                         data={"grant_type": GRANT_TYPE, "assertion": assertion})
        except httpx.TimeoutException:
            raise
        except httpx.TransportError as exc:
            raise auth_failed(f"the token endpoint could not be reached"
                              f" ({type(exc).__name__})") from None
        try:
            answer = decode_json(response.content)
        except msgspec.DecodeError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if response.status_code >= 400:
            detail = " ".join(str(answer[k]) for k in ("error", "error_description")
                              if isinstance(answer.get(k), str))
            # A token endpoint may quote what it was sent: the signed assertion is a
            # credential (for an hour), so it never reaches the message.
            detail = scrub_text(detail, [assertion, *self.secrets()])
            raise auth_failed(f"the token endpoint answered {response.status_code}"
                              + (f" ({detail[:200]})" if detail else ""))
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise auth_failed("the token endpoint's answer has no access_token")
        expires_in = answer.get("expires_in")
        lifetime = (expires_in if isinstance(expires_in, (int, float))
                    and not isinstance(expires_in, bool) else DEFAULT_EXPIRES_IN)
        self._token = token
        self._expires = now + self.ttl(lifetime)


class AuthTransport(httpx.AsyncBaseTransport):
    """Sends through the shared client, with a valid `Authorization: Bearer` token first
    (replacing any Authorization header the request had)."""

    def __init__(self, tokens: TokenSource, shared: httpx.AsyncClient) -> None:
        self.tokens = tokens
        self.shared = shared

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Authorization"] = "Bearer " + await self.tokens.get(self.shared)
        return await self.shared.send(request, stream=True)

    async def aclose(self) -> None:
        """The shared client is the gateway's to close."""


class AuthorizedClient:
    """The HTTP client a provider with a token source sends through: made once per shared
    client, so the token cache outlives requests."""

    __slots__ = ("tokens", "_client", "_shared")

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens
        self._client: httpx.AsyncClient | None = None
        self._shared: httpx.AsyncClient | None = None

    def get(self, shared: httpx.AsyncClient) -> httpx.AsyncClient:
        if self._client is None or self._shared is not shared:
            self._shared = shared
            self._client = httpx.AsyncClient(transport=AuthTransport(self.tokens, shared))
        return self._client
