"""APISIX `ai-rate-limiting` on an APISIX route (`plugins: {ai-rate-limiting: {...}}`): a
token limit per instance of the route's `ai-proxy` / `ai-proxy-multi`, in fixed windows.

As APISIX has it: an instance listed in `instances` has a window of its own; the others
share the route's one window of `limit` tokens per `time_window` seconds. An instance whose
window already holds its limit is refused, or, when `ai-proxy-multi`'s `fallback_strategy`
names `rate_limiting` / `instance_health_and_rate_limiting`, skipped for the next one. The
`X-AI-RateLimit-{Limit,Remaining,Reset}-<instance>` headers tell the client where it stands.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from msgspec import Meta, Struct

from aiproxy_middleware.errors import ConfigError

if TYPE_CHECKING:
    from aiproxy_middleware.observe.tap import AnswerTap

KEY_PREFIX = "ai-rate-limiting"
SHARED = "ai-rate-limiting#global"  # APISIX's name for the window instances share
DEFAULT_REJECTED_CODE = 503
DEFAULT_REJECTED_MSG = "the instance's token rate limit is exceeded"

Positive = Annotated[int, Meta(ge=1)]


class InstanceLimitConf(Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100)]
    limit: Positive
    time_window: Positive


class AiRateLimitingConf(Struct, forbid_unknown_fields=True):
    """APISIX `ai-rate-limiting`'s fields (its `policy`/`redis_*` fields are the gateway's
    top-level `redis`)."""

    limit: Positive | None = None
    time_window: Positive | None = None
    show_limit_quota_header: bool = True
    limit_strategy: Literal["total_tokens", "prompt_tokens", "completion_tokens"] = "total_tokens"
    instances: Annotated[list[InstanceLimitConf], Meta(min_length=1)] | None = None
    rejected_code: Annotated[int, Meta(ge=200, le=599)] = DEFAULT_REJECTED_CODE
    rejected_msg: Annotated[str, Meta(min_length=1)] | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The window one instance is counted in."""

    key: str
    limit: int
    window: int
    label: str
    """The instance's name in the headers (APISIX's: an ai-proxy route's is `ai-proxy-<provider>`)."""


@dataclass(frozen=True, slots=True)
class InstanceState:
    """An instance's window as a request found it."""

    window: Window
    used: int
    left: float

    @property
    def over(self) -> bool:
        return self.used >= self.window.limit

    def headers(self) -> list[tuple[bytes, bytes]]:
        label = self.window.label.encode("latin-1", "replace")
        remaining = max(self.window.limit - self.used, 0)
        reset = math.ceil(self.left) if self.used else 0
        return [(b"x-ai-ratelimit-limit-" + label, str(self.window.limit).encode()),
                (b"x-ai-ratelimit-remaining-" + label, str(remaining).encode()),
                (b"x-ai-ratelimit-reset-" + label, str(reset).encode())]


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """A compiled `ai-rate-limiting`: each candidate's window by its name."""

    windows: dict[str, Window]
    """Candidate name -> its window (candidates without one are not limited)."""
    strategy: str
    show_headers: bool
    rejected_code: int
    rejected_msg: str
    skips: bool
    """Over-limit instances are skipped (the route's fallback_strategy says so)."""

    @classmethod
    def build(cls, conf: AiRateLimitingConf, where: str, route_id: str,
              instances: dict[str, str], skips: bool) -> InstanceLimits:
        """`instances`: each candidate's name -> its name in APISIX (the headers')."""
        if (conf.limit is None) != (conf.time_window is None):
            raise ConfigError(f"{where}: `limit` and `time_window` go together; give both")
        if conf.limit is None and conf.instances is None:
            raise ConfigError(f"{where}: give `limit` and `time_window`, or `instances`")
        by_label = {label: name for name, label in instances.items()}
        windows: dict[str, Window] = {}
        for i, inst in enumerate(conf.instances or ()):
            name = by_label.get(inst.name)
            if name is None:
                raise ConfigError(f"{where}.instances[{i}].name: {inst.name!r} is not an"
                                  f" instance of this route (its instances:"
                                  f" {', '.join(sorted(by_label))})")
            if name in windows:
                raise ConfigError(f"{where}.instances[{i}].name: {inst.name!r} is listed twice")
            windows[name] = Window(f"{KEY_PREFIX}:{{{route_id}}}:{inst.name}", inst.limit,
                                   inst.time_window, inst.name)
        if conf.limit is not None and conf.time_window is not None:
            for name, label in instances.items():
                windows.setdefault(name, Window(f"{KEY_PREFIX}:{{{route_id}}}:{SHARED}",
                                                conf.limit, conf.time_window, label))
        return cls(windows, conf.limit_strategy, conf.show_limit_quota_header,
                   conf.rejected_code, conf.rejected_msg or DEFAULT_REJECTED_MSG, skips)

    def used(self, tap: AnswerTap) -> int:
        """The tokens an answer counts, by `limit_strategy`."""
        if self.strategy == "prompt_tokens":
            return tap.prompt_tokens
        if self.strategy == "completion_tokens":
            return tap.completion_tokens
        return tap.total_tokens
