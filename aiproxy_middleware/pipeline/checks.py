"""Checks on what a client sends that apply whatever the route: nothing with a control
character where it could end up in an upstream request's head."""

from __future__ import annotations

import re
from typing import Any

from aiproxy_middleware.errors import bad_request

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_request(headers: list[tuple[bytes, bytes]], body: Any) -> None:
    """400 for a header value holding CR, LF or NUL, or a `model` holding a control
    character; neither is echoed (a header may carry a secret)."""
    for name, value in headers:
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise bad_request(f"the value of header {name.decode('latin-1')!r} holds a CR, LF"
                              " or NUL character", "invalid_header")
    if "model" in body:
        model = body.get("model")
        if isinstance(model, str) and _CONTROL.search(model):
            raise bad_request("'model' holds a control character", "invalid_model", "model")
