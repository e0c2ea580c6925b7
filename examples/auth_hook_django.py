"""A Django project whose users call the gateway as themselves: the hook asks Django's
authentication backends (`AUTHENTICATION_BACKENDS`) who holds the request's API key.

    uvicorn examples.auth_hook_django:application

A real project keeps its keys in a model and its settings in `settings.py`; the backend
below stands in for one, so this file runs without a database.
"""

from asgiref.sync import sync_to_async
from django.conf import settings

if not settings.configured:
    settings.configure(SECRET_KEY="demo-only-not-secret", ALLOWED_HOSTS=["*"],
                       ROOT_URLCONF=__name__, INSTALLED_APPS=[], MIDDLEWARE=[],
                       AUTHENTICATION_BACKENDS=[f"{__name__}.ApiKeyBackend"])

from django.contrib.auth import authenticate as django_authenticate  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

from aiproxy_middleware import AIProxyMiddleware  # noqa: E402

urlpatterns: list = []


class ApiKeyUser:
    def __init__(self, username: str) -> None:
        self.username = username


class ApiKeyBackend:
    """An authentication backend: the user holding `api_key` (a model lookup in a project)."""

    keys = {"key-of-ada": "ada"}

    def authenticate(self, request, api_key=None):  # noqa: ANN001, ANN201 - Django's signature
        name = self.keys.get(api_key or "")
        return ApiKeyUser(name) if name else None

    def get_user(self, user_id):  # noqa: ANN001, ANN201
        return None


async def authenticate(scope: dict) -> str | None:
    """The API key from `Authorization: Bearer` (OpenAI SDKs) or `x-api-key` (Anthropic's),
    checked by Django's backends (sync: run in Django's thread)."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    scheme, _, key = headers.get("authorization", "").partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
    user = await sync_to_async(django_authenticate)(None, api_key=key)
    return user.username if user is not None else None


application = AIProxyMiddleware(get_asgi_application(), authenticate=authenticate, config={
    "routes": [{"path": "/ai", "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}}],
})
