"""msgspec's validation errors as the config's field paths (`routes[1].provider.timeout: ...`),
for both dialects' front-ends."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from aiproxy_middleware.errors import ConfigError

_CHOICES = {"protocol": "openai, original", "mode": "auto, raw",
            "reasoningContentMode": "passthrough, ignore, concat"}
_MSG = re.compile(r"^(.*?)(?: - at (?:`key` in )?`\$(.*)`)?$", re.S)
_FIELD = re.compile(r"^Object (contains unknown|missing required) field `([^`]*)`$")


def convert(data: Any, cls: type[Any], where: str) -> Any:
    """`data` as a `cls`; a ConfigError naming the field path under `where` otherwise."""
    try:
        return msgspec.convert(data, cls, str_keys=True)
    except msgspec.ValidationError as exc:
        what, at = _MSG.match(str(exc)).groups()  # type: ignore[union-attr]
        path = where + (at or "")
        field = _FIELD.match(what)
        if field:
            path = f"{path}.{field.group(2)}" if path else field.group(2)
            what = ("unknown field (check its spelling and the provider's field list)"
                    if field.group(1) == "contains unknown" else "required field is missing")
        else:
            what = what[0].lower() + what[1:]
            choices = _CHOICES.get(path.rsplit(".", 1)[-1])
            if choices:  # whatever msgspec's wording, name the values it takes
                what = f"{what}; expected one of {choices}"
        raise ConfigError(f"{path.lstrip('.') or 'config'}: {what}") from None
