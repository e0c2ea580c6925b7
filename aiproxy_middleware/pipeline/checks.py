"""Checks on what a client sends that apply whatever the route: nothing with a control
character where it could end up in an upstream request's head."""

from __future__ import annotations

import re
from operator import itemgetter
from typing import Any

from aiproxy_middleware.errors import bad_request

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BREAKS = re.compile(rb"[\r\n\0]")
_VALUE = itemgetter(1)


def check_request(headers: list[tuple[bytes, bytes]], body: Any) -> None:
    """400 for a header value holding CR, LF or NUL, or a `model` holding a control
    character; neither is echoed (a header may carry a secret)."""
    # (three `find`s over every value at once: `b"\r" in value` would raise and clear a
    # TypeError each time, as bytes.__contains__ tries the needle as an int first, and a
    # regex character class is slower per byte than memchr)
    values = b"".join(map(_VALUE, headers))
    if values.find(b"\r") >= 0 or values.find(b"\n") >= 0 or values.find(b"\0") >= 0:
        name = next(name for name, value in headers if _BREAKS.search(value))
        raise bad_request(f"the value of header {name.decode('latin-1')!r} holds a CR, LF"
                          " or NUL character", "invalid_header")
    if "model" in body:
        model = body.get("model")
        if isinstance(model, str) and _CONTROL.search(model):
            raise bad_request("'model' holds a control character", "invalid_model", "model")
