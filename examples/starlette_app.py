"""An existing Starlette app with the AI gateway mounted at `/ai`.

Run from the repository root (no API key, no network: the mock provider answers):

    uvicorn examples.starlette_app:app

    curl localhost:8000/health
    curl localhost:8000/ai/v1/chat/completions -H 'content-type: application/json' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'

Only paths under `/ai` reach the gateway (AI paths are proxied, any other path there is an
OpenAI-style 404); `/` and `/health` stay the app's own.
"""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from aiproxy_middleware import AIProxyMiddleware

GATEWAY = {
    "routes": [
        {
            "path": "/ai",
            # A real provider instead: {"type": "openai", "apiTokens": ["${OPENAI_API_KEY}"]}
            "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}},
        },
    ],
}


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[Route("/", home), Route("/health", health)],
    middleware=[Middleware(AIProxyMiddleware, config=GATEWAY)],
)
