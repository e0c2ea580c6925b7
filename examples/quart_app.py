"""A Quart app with two gateway routes, each with its own model mapping.

Run from the repository root (no API key, no network: both routes use the mock provider):

    uvicorn examples.quart_app:app

    curl localhost:8000/
    curl localhost:8000/ai/mock/v1/chat/completions -H 'content-type: application/json' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'
    curl localhost:8000/ai/other/v1/embeddings -H 'content-type: application/json' \
        -d '{"model": "text-embedding-3-small", "input": "hello"}'

Each prefix is its own OpenAI base URL (`http://localhost:8000/ai/mock/v1`, ...); a real
provider would take its key from the environment: `"apiTokens": ["${DEEPSEEK_API_KEY}"]`.
"""

from quart import Quart

from aiproxy_middleware import AIProxyMiddleware

app = Quart(__name__)


@app.get("/")
async def index() -> dict[str, str]:
    return {"app": "quart"}


app.asgi_app = AIProxyMiddleware(app.asgi_app, config={
    "routes": [
        {"path": "/ai/mock",
         "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}},
        {"path": "/ai/other",
         "provider": {"type": "mock", "modelMapping": {"gpt-4o": "mock-large",
                                                       "*": "mock-small"}}},
    ],
})
