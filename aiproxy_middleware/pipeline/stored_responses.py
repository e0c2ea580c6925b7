"""The stored responses' own endpoints (OpenAI's Responses API), answered from the caller's
records (state/response_records.py), never sent upstream:

- `GET <base>/v1/responses/{id}`: the Response object as it was answered;
- `DELETE <base>/v1/responses/{id}`: `{"id", "object": "response", "deleted": true}`;
- `GET <base>/v1/responses/{id}/input_items`: OpenAI's list (`object: "list"`, `data`,
  `first_id`, `last_id`, `has_more`; `limit` 1-100, default 20; `order` `desc` (default) or
  `asc`; `after` an item id): the items the response was made from, the conversation's
  earlier turns included. An item stored without an `id` is listed with one derived from
  the response id and its place (stable, so `after` pages through them).

Which paths: on a Higress-dialect route (not `protocol: original`, which forwards these
calls to the provider), every path under the route holding `/v1/responses/`; on APISIX
routes, `<uri>/{id}` where `<uri>` ends in `/v1/responses` and is an APISIX route's `uri`
(or lies under a `uri` ending in `*`). Those routes' `methods` do not apply: these are the
gateway's own endpoints (GET and DELETE; anything else is a 405 with `Allow`).

The caller is identified as for the route's model calls (its consumers, the `authenticate`
hook; else the `x-mse-consumer` header an auth layer set); with several APISIX routes on the
path, the first that admits the caller. A response of another consumer is a 404, as an
unknown, expired or deleted one. The id segment must be a plain id (`resp_` and up to 120
letters, digits, `_` or `-`): anything else (`..`, an encoded `/` or NUL, spaces, a very long
one) is a 400 naming `response_id`, and never reaches the store; a plain id reaches it only
hashed with the consumer. While the store (Redis) is unreachable these answer 503.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from aiproxy_middleware.config.model import Api, Route
from aiproxy_middleware.errors import ProxyError, bad_request
from aiproxy_middleware.state.response_records import (Record, ResponseRecords, plain_id,
                                                       store_unreachable)

if TYPE_CHECKING:
    from aiproxy_middleware.config.higress import Config

Scope = dict[str, Any]

MARK = "/v1/responses/"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_MAX_QUERY_FIELDS = 50
_CONTENT = {"assistant": "output_text"}  # other roles' string content is input_text
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
              "reasoning": "rs"}


def stored_routes(config: Config, path: str) -> tuple[Route, ...] | None:
    """The routes whose stored responses `path` names, if it names any (see the module's
    docstring); None: not such a path (the request goes on as before)."""
    at = path.find(MARK)
    if at < 0:
        return None
    apisix = config.apisix_for(path[:at + len(MARK) - 1])
    if apisix:
        return apisix
    route = config.route_for(path)
    if route is not None and route.api is Api.PATH:
        return (route,)
    return None


async def admit_first(admit: Callable[[Route, Scope], Awaitable[Scope]],
                      routes: Sequence[Route], scope: Scope) -> Scope:
    """The scope as the first route that admits the caller leaves it (`Responder._admit`);
    when none does, the first refusal."""
    refused: ProxyError | None = None
    for route in routes:
        try:
            return await admit(route, scope)
        except ProxyError as exc:
            if exc.status >= 500:
                raise
            refused = refused or exc
    raise refused  # type: ignore[misc]  # (routes is never empty)


async def stored_answer(records: ResponseRecords, scope: Scope,
                        consumer: str | None) -> bytes:
    """The JSON answer (status 200) to a call on a stored response, or a `ProxyError`."""
    path, method = scope["path"], scope["method"]
    rest = path[path.find(MARK) + len(MARK):]
    response_id, slash, sub = rest.partition("/")
    if slash and sub != "input_items":
        raise ProxyError(404, "unknown path: the stored responses' paths are"
                         " /v1/responses/{id} and /v1/responses/{id}/input_items",
                         "invalid_request_error", "unknown_url")
    allowed = "GET, DELETE" if not slash else "GET"
    if method not in allowed.split(", "):
        raise ProxyError(405, f"method {method} is not allowed on a stored response; use"
                         f" {allowed}", "invalid_request_error", "method_not_allowed",
                         headers=((b"allow", allowed.encode()),))
    if not plain_id(response_id):
        raise bad_request("'response_id' is not a response id: expected 'resp_' followed by"
                          " up to 120 letters, digits, '_' or '-'", "invalid_value",
                          "response_id")
    query = _query(scope.get("query_string", b""))
    if method == "DELETE":
        if not await records.delete(consumer, response_id):
            raise _missing(records, response_id)
        return msgspec.json.encode({"id": response_id, "object": "response", "deleted": True})
    if _truthy(query.get("stream")):
        raise bad_request("streaming a stored response is not supported: retrieve it without"
                          " 'stream'", "unsupported_parameter", "stream")
    record = await records.load(consumer, response_id)
    if record is None:
        raise _missing(records, response_id)
    if not slash:
        return msgspec.json.encode(record.response)
    return msgspec.json.encode(_item_page(record, query))


def _missing(records: ResponseRecords, response_id: str) -> ProxyError:
    if not records.reachable:
        return store_unreachable()
    return ProxyError(404, f"Response with id '{response_id}' not found.",
                      "invalid_request_error", "not_found", "response_id")


def _query(raw: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True,
                          max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        raise bad_request(f"the query string has more than {_MAX_QUERY_FIELDS} fields",
                          "invalid_request") from None
    return {name: value for name, value in pairs if not name.startswith("include")}


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() not in ("", "false", "0")


def _item_page(record: Record, query: dict[str, str]) -> dict[str, Any]:
    """OpenAI's list of a response's input items, one page of it."""
    limit = query.get("limit", str(DEFAULT_LIMIT))
    if not (limit.isascii() and limit.isdigit() and len(limit) <= 3
            and 1 <= int(limit) <= MAX_LIMIT):
        raise bad_request(f"'limit' must be a whole number from 1 to {MAX_LIMIT}",
                          "invalid_value", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'", "invalid_value", "order")
    items = input_items(record)
    if order == "desc":
        items.reverse()
    start = 0
    after = query.get("after")
    if after is not None:
        start = next((i + 1 for i, item in enumerate(items) if item.get("id") == after), -1)
        if start < 0:
            raise bad_request("'after' names no input item of this response",
                              "invalid_value", "after")
    page = items[start:start + int(limit)]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + len(page) < len(items)}


def input_items(record: Record) -> list[dict[str, Any]]:
    """The items the response was made from (the record's items before its output), each
    with an `id`, a message's string content as a list of text parts."""
    output = record.response.get("output")
    count = len(record.items) - (len(output) if isinstance(output, list) else 0)
    items = []
    for place, item in enumerate(record.items[:max(0, count)]):
        item = dict(item)
        kind = item.setdefault("type", "message")
        if "id" not in item:
            digest = hashlib.blake2b(f"{record.id}/{place}".encode(), digest_size=12)
            item["id"] = f"{_ID_PREFIX.get(kind, 'item')}_{digest.hexdigest()}"
        if kind == "message" and isinstance(item.get("content"), str):
            part = _CONTENT.get(item.get("role"), "input_text")  # type: ignore[arg-type]
            item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items
