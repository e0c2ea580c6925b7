"""A one-file Django project whose ASGI application is wrapped by the AI gateway.

Run from the repository root (no API key, no network: the mock provider answers):

    uvicorn examples.django_app.asgi:application

    curl localhost:8000/hello/
    curl localhost:8000/ai/v1/chat/completions -H 'content-type: application/json' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'

Django does not speak the ASGI lifespan protocol, so the middleware answers it for Django:
its HTTP client is opened at start-up and closed at shutdown (without lifespan, e.g. under
`--lifespan off` or a test client, it is opened on the first AI request). In a real project the settings live in
`settings.py` and only the last lines below go into its `asgi.py`.
"""

from django.conf import settings

if not settings.configured:  # a host process (tests, a real project) may have configured it
    settings.configure(
        DEBUG=False,
        SECRET_KEY="demo-only-not-secret",
        ALLOWED_HOSTS=["*"],  # demo only
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
    )

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from aiproxy_middleware import AIProxyMiddleware  # noqa: E402


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django", "path": request.path})


urlpatterns = [path("hello/", hello)]

django_asgi_app = get_asgi_application()

# For a real provider: {"type": "openai", "apiTokens": ["${OPENAI_API_KEY}"]}
application = AIProxyMiddleware(django_asgi_app, config={
    "routes": [{"path": "/ai", "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}}],
})
