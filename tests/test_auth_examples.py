"""The `authenticate` hook examples (`examples/auth_hook_*.py`): each framework's own users
call the AI routes as themselves, with an API key (through the official SDK) or a session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `examples` is imported from the repository root, as uvicorn does
    sys.path.insert(0, str(ROOT))

# Django's settings are the process's: the main Django example's first (its URLs), this one's
# backends set per test.
from examples.django_app import asgi as _django_example  # noqa: E402, F401
from examples import auth_hook_django, auth_hook_fastapi, auth_hook_quart  # noqa: E402

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def sdk(app: Any, key: str, base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"http://test{base}", max_retries=0,
                              http_client=client(app))


async def check_keys(app: Any, base: str) -> None:
    answer = await sdk(app, "key-of-ada", base).chat.completions.create(**CHAT)
    assert answer.choices[0].message.content == "hello"
    with pytest.raises(openai.AuthenticationError):
        await sdk(app, "key-of-nobody", base).chat.completions.create(**CHAT)


@pytest.mark.parametrize("example, base", [(auth_hook_fastapi, "/v1"), (auth_hook_quart, "/ai/v1")],
                         ids=["fastapi", "quart"])
async def test_api_key_and_session(example, base):
    async with LifespanManager(example.app) as manager:
        await check_keys(manager.app, base)
        async with client(manager.app) as browser:
            assert (await browser.post(f"{base}/chat/completions", json=CHAT)).status_code == 401
            assert (await browser.post("/login/carol")).status_code == 200  # a session
            assert (await browser.post(f"{base}/chat/completions", json=CHAT)).status_code == 200
        async with client(manager.app) as forged:
            forged.cookies.set("session", "eyJ1c2VyIjoiZXZlIn0.forged.sig")
            assert (await forged.post(f"{base}/chat/completions", json=CHAT)).status_code == 401


async def test_django_auth_backends():
    from django.test import override_settings
    backends = [f"{auth_hook_django.__name__}.ApiKeyBackend"]
    with override_settings(AUTHENTICATION_BACKENDS=backends):  # (another example may
        try:                                                    # have configured Django)
            await check_keys(auth_hook_django.application, "/ai/v1")
            r = await client(auth_hook_django.application).post(
                "/ai/v1/chat/completions", json=CHAT, headers={"x-api-key": "key-of-ada"})
            assert r.status_code == 200
        finally:
            await auth_hook_django.application.aclose()
