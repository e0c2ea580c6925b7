"""Which of a client's request headers go upstream: the ones named here, and no others.

An allow-list, not a deny-list: a header the gateway has not thought about is one an
upstream may act on (who is billed, which method runs, how the body is decoded), so it
stays behind. Each name here is one a provider documents as the caller's choice about its
own request, which changes nothing for anyone else sharing the gateway's credentials:

- `anthropic-version`: the version of the Messages API the body is written for (required
  by Anthropic; the gateway's default is used when the client sends none).
- `anthropic-beta`: opts the request into beta features by name.
- `openai-beta`: opts into OpenAI's beta APIs (`assistants=v2`), which require it.

A provider adds the headers of its own API that are of that kind (`Provider.client_headers`:
qwen's DashScope headers, say).

Left behind on purpose, among others: `OpenAI-Organization`, `OpenAI-Project`,
`x-goog-user-project` (they choose whose account is used and billed); `Content-Encoding`
(the gateway sends the body it read, as it encodes it); `X-HTTP-Method-Override` and its
variants (the method is the gateway's); `Forwarded`, `X-Forwarded-*`, `X-Real-IP` (claims
about the client's address); `User-Agent` (the gateway sends its own, once); `Accept`
(the gateway chooses the answer's format); `Idempotency-Key` (an upstream keys it per
account, which every client of the gateway shares: one client's key could replay another
client's answer); `X-Request-Id` and its variants (an upstream may key in-flight requests
by it); `x-stainless-*` (SDK telemetry that no upstream needs); credentials and cookies.
"""

from __future__ import annotations

FORWARDED = frozenset({b"anthropic-version", b"anthropic-beta", b"openai-beta"})


def forwarded(headers: list[tuple[bytes, bytes]],
              allowed: frozenset[bytes] = FORWARDED) -> dict[str, str]:
    """The client's headers that are on `allowed` (a header sent twice is joined with `, `,
    as HTTP reads it)."""
    out: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        if name in allowed:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            out[key] = f"{out[key]}, {text}" if key in out else text
    return out
