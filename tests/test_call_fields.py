"""`new_call` builds a `Call` by position (pipeline/shaping.py): each value lands in the
field its parameter names."""

from __future__ import annotations

import dataclasses

from aiproxy_middleware.pipeline.shaping import new_call
from aiproxy_middleware.provider import Call, Endpoint
from aiproxy_middleware.transforms.fetch_policy import ImagePolicy
from aiproxy_middleware.wire.json_body import JsonBody


def test_new_call_puts_each_value_in_its_field():
    body = JsonBody({"model": "m"}, b'{"model":"m"}')
    headers = [(b"x-one", b"1")]
    policy = ImagePolicy.__new__(ImagePolicy)
    request = object()
    call = new_call(Endpoint.CHAT, body, {"query_string": b"a=%C3%A9", "headers": headers},
                    "/v1/chat/completions", request=request,  # type: ignore[arg-type]
                    model="mapped", requested="asked", stream=True, include_usage=True,
                    method="PUT", image_policy=policy)
    assert [f.name for f in dataclasses.fields(Call)] == [
        "endpoint", "body", "request", "model", "requested_model", "token", "stream", "path",
        "query", "client_headers", "include_usage", "answer", "method", "image_policy",
        "consumer"]
    assert call.endpoint is Endpoint.CHAT and call.body is body and call.request is request
    assert (call.model, call.requested_model, call.token) == ("mapped", "asked", "")
    assert call.stream is True and call.include_usage is True
    assert call.path == "/v1/chat/completions" and call.query == "a=%C3%A9"
    assert call.client_headers is headers and call.answer is None
    assert call.method == "PUT" and call.image_policy is policy and call.consumer is None
