"""Rewrites every provider shares: model names (`modelMapping`) and `customSettings`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiproxy_middleware.provider_config import CustomSetting
    from aiproxy_middleware.wire.json_body import JsonBody


class ModelMapper:
    """Maps a requested model name to the provider's, as `modelMapping` configures it.

    Order: the exact key; then keys ending in `*` as prefixes, longest first; then `~regex`
    keys in config order (`$1` in the value is the first group); then `*` or `""`. A mapped
    value that is empty keeps the requested name.
    """

    __slots__ = ("_exact", "_prefixes", "_patterns", "_fallback", "_empty")

    def __init__(self, mapping: dict[str, str]) -> None:
        self._exact: dict[str, str] = {}
        self._prefixes: list[tuple[str, str]] = []
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        self._fallback: str | None = mapping.get("*", mapping.get(""))
        self._empty = not mapping
        for key, value in mapping.items():
            if key in ("*", ""):
                continue
            if key.startswith("~"):
                try:
                    self._patterns.append((re.compile(key[1:]), value))
                except re.error as exc:
                    raise ValueError(f"[{key!r}]: invalid regular expression: {exc}") from None
            elif key.endswith("*"):
                self._prefixes.append((key[:-1], value))
            else:
                self._exact[key] = value
        self._prefixes.sort(key=lambda kv: len(kv[0]), reverse=True)

    def __call__(self, model: str) -> str:
        if self._empty:
            return model
        mapped = self._exact.get(model)
        if mapped is None:
            mapped = self._match(model)
        return mapped or model

    def _match(self, model: str) -> str | None:
        for prefix, value in self._prefixes:
            if model.startswith(prefix):
                return value
        for pattern, value in self._patterns:
            m = pattern.search(model)
            if m:
                return _expand(value, m)
        return self._fallback


_GROUP = re.compile(r"\$(\d+)|\$\{(\d+)\}")


def _expand(template: str, m: re.Match[str]) -> str:
    def group(g: re.Match[str]) -> str:
        n = int(g.group(1) or g.group(2))
        return (m.group(n) or "") if n <= (m.re.groups or 0) else ""
    return _GROUP.sub(group, template)


# The name table of customSettings auto mode: setting name -> protocol column -> field name.
SETTING_NAMES: dict[str, dict[str, str]] = {
    "max_tokens": {"openai": "max_tokens", "baidu": "max_output_tokens", "spark": "max_tokens",
                   "qwen": "max_tokens", "gemini": "maxOutputTokens", "claude": "max_tokens",
                   "minimax": "tokens_to_generate"},
    "temperature": {"openai": "temperature", "baidu": "temperature", "spark": "temperature",
                    "qwen": "temperature", "gemini": "temperature", "hunyuan": "Temperature",
                    "claude": "temperature", "minimax": "temperature"},
    "top_p": {"openai": "top_p", "baidu": "top_p", "qwen": "top_p", "gemini": "topP",
              "hunyuan": "TopP", "claude": "top_p", "minimax": "top_p"},
    "top_k": {"spark": "top_k", "gemini": "topK", "claude": "top_k"},
    "seed": {"openai": "seed", "qwen": "seed"},
}
# Where a protocol keeps its sampling parameters, for both modes.
SETTING_PATHS: dict[str, str] = {"qwen": "parameters.", "gemini": "generation_config."}


class SettingsApplier:
    """Applies `customSettings` to a request body, resolved once for one protocol column."""

    __slots__ = ("_settings",)

    def __init__(self, settings: list[CustomSetting], column: str | None) -> None:
        resolved: list[tuple[tuple[str, ...], Any, bool]] = []
        for i, s in enumerate(settings):
            name = s.name
            if s.mode == "auto":
                names = SETTING_NAMES.get(s.name)
                if names is None:
                    raise ValueError(f"[{i}].name: {s.name!r} has no auto-mode translation; use"
                                     f" one of {', '.join(SETTING_NAMES)} or set mode: raw")
                if column is None or column not in names:
                    raise ValueError(f"[{i}].name: {s.name!r} is not supported by the"
                                     f" {column or 'native'} protocol; set mode: raw to send it as is")
                name = names[column]
            path = SETTING_PATHS.get(column or "", "") + name
            resolved.append((tuple(path.split(".")), s.value, s.overwrite))
        self._settings = tuple(resolved)

    def __bool__(self) -> bool:
        return bool(self._settings)

    def apply(self, body: JsonBody) -> None:
        for path, value, overwrite in self._settings:
            head = path[0]
            if len(path) == 1:
                if overwrite or head not in body:
                    body.set(head, value)
                continue
            root = body.get(head)
            node = root = root if isinstance(root, dict) else {}
            for key in path[1:-1]:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = node[key] = {}
                node = child
            if overwrite or path[-1] not in node:
                node[path[-1]] = value
                body.set(head, root)
