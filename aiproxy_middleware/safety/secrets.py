"""Keeping configured credentials out of what the gateway says and logs.

The gateway's own messages never quote a credential. What it relays or logs from elsewhere
may: an upstream error body that echoes the request's key, a token endpoint's error text,
an exception raised inside a library. Three things cover those:

- `scrub` replaces every known secret in a body with `***`. The relay scrubs with a
  `Scrubber` (`upstream_scrubber`: the provider's configured secrets and the credentials
  the request carried, its auth headers' values, a SigV4/TC3 signature) every whole
  upstream answer it relays or converts (errors above all) before anything reads it,
  every streamed event as it is sent, and every header it relays; the request's summary
  (summaries.py) is scrubbed with it too. The answer is decoded first (encodings.py):
  compressed bytes would hide a secret;
- `Provider.secrets()` lists a provider's configured secrets (apiTokens and the
  provider's own keys, an APISIX route's `auth` values);
- `SecretFilter`, on the gateway's loggers and httpx's and httpcore's, replaces those
  secrets in every log record's message and traceback.

Values shorter than `MIN_LENGTH` characters are not treated as secrets (replacing them
would mangle ordinary text; real keys are far longer).
"""

from __future__ import annotations

import functools
import logging
import re
import traceback
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx


class Provider(Protocol):
    """What this module needs of a provider (the provider layer sits above this one)."""

    def secrets(self) -> list[str]: ...

MIN_LENGTH = 8
MASK = "***"
# Request headers whose values are credentials.
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "api-key", "x-api-key",
                      "x-goog-api-key", "x-amz-security-token")
_CREDENTIAL_NAMES = frozenset(CREDENTIAL_HEADERS)
_CREDENTIAL_BYTES = frozenset(h.encode() for h in CREDENTIAL_HEADERS)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9-]*\s+(\S.*)$")
_SIGNATURE = re.compile(r"Signature=([0-9A-Za-z+/=_-]+)")


def expand(secrets: Iterable[str]) -> list[str]:
    """The strings to look for: each secret, and the credential inside an auth value
    (`Bearer <token>`'s token, a signature), longest first, none shorter than MIN_LENGTH."""
    return list(_expanded(tuple(secrets)))


@functools.lru_cache(maxsize=1024)
def _expanded(secrets: tuple[str, ...]) -> tuple[str, ...]:
    # The same few secrets come back with every answer: worked out once.
    found: set[str] = set()
    for s in secrets:
        if not isinstance(s, str):
            continue
        s = s.strip()
        found.add(s)
        m = _SCHEME.match(s)
        if m:
            found.add(m.group(1).strip())
        found.update(_SIGNATURE.findall(s))
    return tuple(sorted((s for s in found if len(s) >= MIN_LENGTH), key=len, reverse=True))


def scrub(body: bytes, secrets: Iterable[str]) -> bytes:
    """`body` with every secret (as `expand` gives them) replaced by `***`; also the
    secret's JSON-escaped form (a `/` as `\\/`, say)."""
    if not body:
        return body
    for raw in _needles(tuple(expand(secrets))):
        if body.find(raw) >= 0:
            body = body.replace(raw, MASK.encode())
    return body


@functools.lru_cache(maxsize=1024)
def _needles(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(form.encode("utf-8", "replace") for secret in secrets
                 for form in _forms(secret))


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`."""
    for secret in expand(secrets):
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, MASK)
    return text


def _forms(secret: str) -> tuple[str, ...]:
    escaped = secret.replace("\\", "\\\\").replace("/", "\\/").replace('"', '\\"')
    return (secret,) if escaped == secret else (secret, escaped)


_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|signature|password|credential|session|"
                              r"cookie", re.I)


def auth_secrets(header: dict[str, str], query: dict[str, str]) -> tuple[str, ...]:
    """The secrets among an APISIX route's `auth.header` and `auth.query` values: every
    query value, and the values of headers named like credentials (not, say, an
    `anthropic-version` header that rides along)."""
    return (*(v for k, v in header.items() if _CREDENTIAL_NAME.search(k)), *query.values())


def shown_url(url: str) -> str:
    """A configured URL as an error message may quote it: a password in it and its query
    values (an endpoint may carry a key there) as `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, _, _ = rest.partition("#")
    rest, q, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    user, at, host = netloc.rpartition("@")
    if at:
        name, colon, _ = user.partition(":")
        netloc = f"{name}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    if q:
        query = "&".join(f"{k}={MASK}" if eq else k
                         for k, eq, _ in (p.partition("=") for p in query.split("&")))
    return f"{scheme}{sep}{netloc}{slash}{path}" + (f"?{query}" if q else "")


def request_credentials(request: httpx.Request | None) -> list[str]:
    """The credential header values a request carried (as sent: after any signing)."""
    if request is None:
        return []
    sent = getattr(request, "sent", None)
    if sent is not None:  # the gateway's own direct request: its headers as it built them
        return _sent_credentials(sent)
    return [v.decode("latin-1") for name, v in request.headers.raw
            if name.lower() in _CREDENTIAL_BYTES]


def _sent_credentials(sent: dict[str, str]) -> list[str]:
    names = tuple(sent)
    found = _credential_names.get(names)
    if found is None:
        if len(_credential_names) >= 256:
            _credential_names.clear()
        found = _credential_names[names] = tuple(n for n in names
                                                 if n.lower() in _CREDENTIAL_NAMES)
    return list(map(sent.__getitem__, found))  # (in C: a list comprehension is a call)


_credential_names: dict[tuple[str, ...], tuple[str, ...]] = {}
"""The credential headers among a request's header names, by those names (a provider
builds its requests with the same few names: worked out once each, at most 256 sets)."""


class Scrubber:
    """Replaces one set of secrets (each in the forms `scrub` looks for) with `***` in
    bodies, header lists and text. Made once per set of secrets (`scrubber`): what a call
    pays is a few substring searches."""

    __slots__ = ("needles", "texts", "_detect", "_checks")

    def __init__(self, secrets: tuple[str, ...]) -> None:
        expanded = _expanded(secrets)
        self.needles = _needles(expanded)
        """What is replaced, longest first (`Bearer <key>` before `<key>`)."""
        self.texts = tuple(form for secret in expanded for form in _forms(secret))
        # What is searched for first: a needle that holds another one (`Bearer <key>`)
        # cannot be there without it.
        self._detect = tuple(n for n in self.needles
                             if not any(m != n and m in n for m in self.needles))
        # A body is searched first for each needle's rarest byte (a scan for one byte is
        # memchr's, some ten times quicker than a substring search), and for the needle
        # only where that byte is: nearly every answer holds none of them. A needle with no
        # rare byte (a hex key) is searched for as it is. (A regex alternation of the
        # needles costs more than several searches: 10 to 140 µs over a 26 KB stream.)
        self._checks = tuple((_rarest(n), n) for n in self._detect)

    def __bool__(self) -> bool:
        return bool(self.needles)

    def body(self, data: bytes) -> bytes:
        # (bytes are searched with `find`: `needle in data` first tries the needle as an
        # int, and raises and clears a TypeError each time, which costs more than the search)
        for mark, needle in self._checks:
            if (mark is None or data.find(mark) >= 0) and data.find(needle) >= 0:
                break
        else:
            return data
        for needle in self.needles:
            if data.find(needle) >= 0:
                data = data.replace(needle, _MASK)
        return data

    def text(self, value: str) -> str:
        for form in self.texts:
            if form in value:
                value = value.replace(form, MASK)
        return value

    def headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """`headers` (names and values) without the secrets: the same list when none is
        in them."""
        if not self._detect:
            return headers
        # One search per needle over all of them at once (a few times cheaper than one
        # per header).
        blob = b"\n".join(map(b"\n".join, headers))
        for needle in self._detect:
            if blob.find(needle) >= 0:
                return [(self.body(k), self.body(v)) for k, v in headers]
        return headers


_MASK = MASK.encode()

_RARE_FIRST = b"ZQJXKVBPYGFWMUCLDRHSNIOATEzq"
"""Bytes seldom in an answer (JSON keys and values, English text), rarest first: capitals
by their frequency in English, then two small letters no JSON key of the APIs holds. Keys
are mostly random mixed-case text, so nearly every key holds one."""


def _rarest(needle: bytes) -> bytes | None:
    """The byte of `needle` rarest by `_RARE_FIRST` (None when it holds none of them)."""
    return next((bytes((b,)) for b in _RARE_FIRST if b in needle), None)


@functools.lru_cache(maxsize=1024)
def _scrubber(secrets: tuple[str, ...]) -> Scrubber:
    return Scrubber(secrets)


def scrubber(secrets: Iterable[str]) -> Scrubber:
    """The scrubber for `secrets` (shared by every call with the same secrets)."""
    return _scrubber(tuple(secrets))


def upstream_scrubber(provider: Provider, response: httpx.Response | None) -> Scrubber:
    """What keeps an upstream answer (whole or streamed, body and headers) and what the
    gateway records of it free of the provider's configured secrets and the credentials
    its request carried."""
    request = None
    if response is not None:
        try:
            request = response.request
        except RuntimeError:  # an answer held for a retry keeps no request
            pass
    return _scrubber((*provider.secrets(), *request_credentials(request)))


# ---- logs --------------------------------------------------------------------------------

_providers: weakref.WeakSet[Any] = weakref.WeakSet()
LOGGERS = ("aiproxy_middleware", "aiproxy_middleware.summary", "httpx", "httpcore.connection",
           "httpcore.http11", "httpcore.http2", "httpcore.proxy", "aiohttp.client")


def known_secrets() -> list[str]:
    """The secrets of every provider alive in the process."""
    found: list[str] = []
    for provider in list(_providers):
        try:
            found.extend(provider.secrets())
        except Exception:  # noqa: BLE001 - a provider half-built
            continue
    return found


class SecretFilter(logging.Filter):
    """Replaces every known secret in a record's message and traceback (a record with a
    secret is rewritten: its message formatted, its traceback kept as text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = expand(known_secrets())
        if not secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the logging module's to report
            return True
        clean = scrub_text(message, secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or "".join(
                traceback.format_exception(*record.exc_info)).rstrip("\n")
            clean = scrub_text(text, secrets)
            if clean != text:
                record.exc_text, record.exc_info = clean, None
        elif record.exc_text:
            record.exc_text = scrub_text(record.exc_text, secrets)
        return True


_FILTER = SecretFilter()


def watch(provider: Provider) -> None:
    """Keep `provider`'s secrets out of the logs (for as long as it lives)."""
    _providers.add(provider)
    for name in LOGGERS:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
