"""Building upstream URLs so that nothing a client sends can move them.

A configured base URL is parsed once; a request sets only the path below the base path and
the query. The scheme, host, port and base path come from the configuration alone, whatever
the client's path, model or query hold:

- a client's request path must be origin-form (`/...`) with no CR, LF or NUL
  (`request_path_problem`), and is percent-encoded before it joins a URL (`encode_path`);
- a value from a request that names something in a URL (a model, a deployment, a file id)
  is one percent-encoded path segment (`segment`): `/`, `?`, `#` and control characters in
  it are a 400, never a way to another path or action;
- `upstream_url` refuses a path that is not already safe: one that is not percent-encoded,
  or holds a `.` or `..` segment (which a client or server would resolve above the base
  path), in any spelling.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, urlsplit

from aiproxy_middleware.errors import bad_request

# RFC 3986 pchar: what a path segment may hold unencoded.
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,;=:@"
_SAFE_PATH = re.compile(rf"(?:/(?:[{_PCHAR}]|%[0-9A-Fa-f]{{2}})*)*")
# A `.` or `..` segment, written plainly or percent-encoded (`%2e`), which a server may
# decode before resolving it.
_DOT_SEGMENT = re.compile(r"/(?:\.|%2[eE]){1,2}(?=[/?#]|$)")
_QUERY_UNSAFE = re.compile(rf"[^{_PCHAR}/?%]|%(?![0-9A-Fa-f]{{2}})")
_PATH_SAFE_CHARS = "/!$&'()*+,;=:@~"
# What a segment value may not hold: a path or query delimiter, a fragment, a control char.
_SEGMENT_BAD = re.compile(r"[/?#\\\x00-\x1f\x7f]")


def request_path_problem(path: str) -> str | None:
    """Why a client's request path cannot be served, or None. A path that does not start
    with `/` is not origin-form (uvicorn passes `.evil.example/x` and `@host/x` through);
    CR, LF and NUL would split or cut a request line or a log line."""
    if not path.startswith("/"):
        return "the request path must start with '/'"
    if "\r" in path or "\n" in path or "\0" in path:
        return "the request path holds a CR, LF or NUL character"
    return None


def has_dot_segment(path: str) -> bool:
    """The (decoded) path holds a `.` or `..` segment."""
    return ("/." in path or "/%" in path) and _DOT_SEGMENT.search(path) is not None


def encode_path(path: str) -> str:
    """A decoded client path (ASGI's `scope["path"]`) percent-encoded for a URL: `?`, `#`,
    `%`, spaces and anything outside RFC 3986's path characters are escaped."""
    return quote(path, safe=_PATH_SAFE_CHARS)


def segment(value: str, name: str = "model", slashes: bool = False) -> str:
    """`value` as one percent-encoded URL path segment. A 400 naming `name` when it is
    empty, `.` or `..`, or holds `/` (unless `slashes`: then encoded as %2F, for ids such
    as AWS ARNs that are documented that way), `?`, `#`, a backslash or a control
    character."""
    bad = _SEGMENT_BAD.search(value)
    if bad is not None and not (slashes and bad.group() == "/"
                                and _SEGMENT_BAD.search(value.replace("/", "")) is None):
        raise bad_request(f"'{name}' cannot hold '/', '?', '#', '\\' or control characters:"
                          " it names one item in the provider's URL", f"invalid_{name}", name)
    if value in ("", ".", ".."):
        raise bad_request(f"'{name}' is not a valid name", f"invalid_{name}", name)
    return quote(value, safe="@")  # `@`: Vertex model versions (`claude-x@20240620`)


def configured_path(path: str) -> str:
    """A path from the configuration, percent-encoded where it is not (its `%XX` escapes
    are kept); ValueError for a `.` or `..` segment, which would resolve above it."""
    if has_dot_segment(path):
        raise ValueError("a URL path cannot hold '.' or '..' segments")
    return quote(path, safe=_PATH_SAFE_CHARS + "%")


@lru_cache(maxsize=512)
def _origin_and_path(base: str) -> tuple[str, str]:
    """A base URL as (scheme://netloc, its path with no trailing `/`, percent-encoded)."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query \
            or parts.fragment:
        raise ValueError(f"not a base URL: {parts.scheme}://{parts.hostname}")
    return f"{parts.scheme}://{parts.netloc}", encode_path(parts.path.rstrip("/"))


@lru_cache(maxsize=1024)  # a provider's own paths are few: each is checked once
def _safe_path(path: str) -> bool:
    return _SAFE_PATH.fullmatch(path) is not None and not has_dot_segment(path)


def upstream_url(base: str, path: str = "", query: str = "") -> str:
    """`base` (scheme, host, port and base path, as configured) with `path` below its base
    path and `query` as the query. `path` is empty or an encoded absolute path; one with
    a dot segment or characters that are not percent-encoded is a 400. Unsafe characters
    in `query` (a `#`, spaces, controls) are percent-encoded."""
    origin, base_path = _origin_and_path(base)
    if path and not _safe_path(path):
        raise bad_request("the request path cannot be sent upstream: it holds a '.' or '..'"
                          " segment or characters that are not percent-encoded",
                          "invalid_path")
    url = origin + base_path + path
    if query:
        if _QUERY_UNSAFE.search(query) is not None:
            query = _QUERY_UNSAFE.sub(_escape, query)
        url += "?" + query
    return url


def _escape(match: re.Match[str]) -> str:
    return quote(match.group(), safe="")
