"""The top-level `responses:` section (both dialects): how long and how many stored
responses (`store`, `previous_response_id`, GET/DELETE `/v1/responses/{id}`) are kept, in the
shared store (state/response_records.py).

    responses:
      ttl: 86400            # seconds a stored response is kept (default: a day)
      maxPerConsumer: 100   # each consumer's newest responses kept (0: none are stored)
      maxBytes: 4194304     # bytes one record (the conversation so far) may take (4 MiB)
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from aiproxy_middleware.state.response_records import (DEFAULT_MAX_BYTES,
                                                       DEFAULT_MAX_PER_CONSUMER, DEFAULT_TTL,
                                                       ResponsesSettings)


class ResponsesSection(Struct, rename="camel", forbid_unknown_fields=True):
    ttl: Annotated[int, Meta(ge=1, le=366 * 86_400)] = int(DEFAULT_TTL)
    max_per_consumer: Annotated[int, Meta(ge=0, le=100_000)] = DEFAULT_MAX_PER_CONSUMER
    max_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = DEFAULT_MAX_BYTES

    def settings(self) -> ResponsesSettings:
        return ResponsesSettings(float(self.ttl), self.max_per_consumer, self.max_bytes)
