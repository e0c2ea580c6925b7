"""OpenAI's Responses API (`/v1/responses`) on a route: native or bridged, and its state.

A candidate whose provider has a Responses API of its own (`Provider.responses_path()`:
`openai`, `azure` where its API version has it) gets the client's body as sent, model mapped,
its auth; the answer, JSON or SSE, is relayed as it came, and nothing is stored here (the
provider keeps its own responses, and a native `previous_response_id` is the provider's).

Any other candidate is bridged: the request is parsed (`wire/responses.py`: a 400 naming a
field with no chat equivalent), the conversation so far is loaded when it names a
`previous_response_id` (the caller's own stored responses: `state/response_records.py`), and
the chat body it becomes goes through the provider's own chat conversion, like any chat call.
Its answer comes back as a Response object or the Responses event stream
(`wire/responses_answers.py`) and, unless the request says `store: false`, is stored with the
conversation (earlier items, this input, this output) before its last bytes reach the
client, so a follow-up turn on any worker finds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from aiproxy_middleware.errors import upstream_invalid
from aiproxy_middleware.shapes import decode_json
from aiproxy_middleware.state.response_records import previous_not_found
from aiproxy_middleware.wire.json_body import JsonBody
from aiproxy_middleware.wire.responses import input_items, new_response_id, parse_request, to_chat
from aiproxy_middleware.wire.responses_answers import (ResponseStream, convert_answer,
                                                       response_object)

if TYPE_CHECKING:
    from aiproxy_middleware.config.model import Candidate
    from aiproxy_middleware.state.response_records import ResponseRecords

logger = logging.getLogger("aiproxy_middleware")


def native(candidate: Candidate) -> bool:
    """Whether `candidate` answers `/v1/responses` itself: its provider has the API, and an
    APISIX endpoint override (if any) does not send the call to another API's path."""
    if candidate.provider.responses_path() is None:
        return False
    policy = candidate.shape_upstream
    override = getattr(policy, "endpoint", None)
    path = getattr(override, "path", "") or ""
    return not path or path.rstrip("/").endswith("/responses")


class ResponsesTurn:
    """One `/v1/responses` request's bridge: the parsed request, the conversation it
    continues, the response id, and the answer to store."""

    __slots__ = ("data", "records", "consumer", "request", "response_id", "created",
                 "previous", "response", "events")

    def __init__(self, data: bytes, records: ResponseRecords | None,
                 consumer: str | None) -> None:
        self.data = data
        self.records = records
        self.consumer = consumer
        self.request: Any = None
        """The parsed request (on the first bridged attempt)."""
        self.response_id = ""
        self.created = 0
        self.previous: Sequence[dict[str, Any]] = ()
        """The conversation's earlier items (input and output of earlier turns)."""
        self.response: dict[str, Any] | None = None
        """The Response object of a whole answer, once converted."""
        self.events: ResponseStream | None = None
        """The converter of a streamed answer (its final Response is stored)."""

    async def chat(self) -> JsonBody:
        """The chat body for one bridged attempt: the request parsed and the conversation
        so far loaded on the first (a 400 for a bad field or an unknown previous id)."""
        if self.request is None:
            request = parse_request(decode_json(self.data))
            self.previous = await self._previous(getattr(request, "previous_response_id", None))
            self.request = request
            self.response_id = new_response_id()
            self.created = int(time.time())
        body = to_chat(self.request, self.previous)
        if body.get("stream") is True:  # the gateway reads the usage, and the Response has it
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                      "include_usage": True}
        return JsonBody(body)

    async def _previous(self, previous_id: Any) -> Sequence[dict[str, Any]]:
        if previous_id is None:
            return ()
        if self.records is None:
            raise previous_not_found(str(previous_id))
        # (OpenAI's answer for an unknown one: a 400 naming the field; a 503 while the
        # shared store is unreachable)
        return (await self.records.previous(self.consumer, previous_id)).items

    def answer(self, status: int, data: bytes) -> bytes:
        """A whole chat answer (converted by the provider) as the Response object, or its
        error in OpenAI's format with the status kept."""
        if status >= 400:
            return convert_answer(status, data, self.request, self.response_id)
        try:
            chat = decode_json(data)
        except msgspec.DecodeError:
            raise upstream_invalid("the provider's answer is not JSON") from None
        self.response = response_object(chat, self.request, self.response_id, self.created)
        return msgspec.json.encode(self.response)

    def stream(self, inner: Any) -> ResponseStream:
        """The converter of a streamed answer: the provider's (`inner`, may be None), then
        the chat chunks into Responses events."""
        self.events = ResponseStream(self.request, self.response_id, inner)
        return self.events

    async def save(self) -> None:
        """Stores the answer with the conversation (unless `store: false`, or the answer
        failed). A store that is down loses the record, not the answer: logged."""
        if self.records is None or self.request is None \
                or getattr(self.request, "store", True) is False:
            return
        response = self.response
        if response is None and self.events is not None:
            response = self.events.response()
        if not isinstance(response, dict) or response.get("status") not in (
                "completed", "incomplete"):
            return
        items = [*self.previous, *input_items(self.request), *response.get("output", ())]
        try:
            await self.records.save(self.consumer, self.response_id, items, response)
        except Exception as exc:  # noqa: BLE001 - the answer goes on without its record
            logger.warning("aiproxy: response %s was not stored: %s", self.response_id,
                           type(exc).__name__)
