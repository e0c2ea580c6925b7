"""A FastAPI app whose own users call its AI routes as themselves: the app's API keys (sent
by the OpenAI SDK as `Authorization: Bearer ...`) or its session cookie name the consumer,
through the same dependency its own routes use.

    uvicorn examples.auth_hook_fastapi:app

    curl localhost:8000/v1/chat/completions -H 'authorization: Bearer key-of-ada' \
        -H 'content-type: application/json' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'
"""

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.middleware.sessions import SessionMiddleware

from aiproxy_middleware import AIProxyMiddleware

USERS_BY_KEY = {"key-of-ada": "ada", "key-of-bob": "bob"}  # the app's own user store
bearer = HTTPBearer(auto_error=False)
app = FastAPI()


async def current_user(request: Request,
                       key: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str | None:
    """The app's user: by API key, else by session (None: nobody)."""
    if key is not None and key.credentials in USERS_BY_KEY:
        return USERS_BY_KEY[key.credentials]
    return request.session.get("user")


@app.post("/login/{name}")
async def login(name: str, request: Request) -> dict[str, str]:
    request.session["user"] = name  # (a real app checks a password here)
    return {"user": name}


@app.get("/me")
async def me(user: str | None = Depends(current_user)) -> dict[str, str]:
    if user is None:
        raise HTTPException(401)
    return {"user": user}


async def authenticate(scope: dict) -> str | None:
    """The gateway's hook: the same dependency, on the AI request."""
    request = Request(scope)
    return await current_user(request, await bearer(request))


app.add_middleware(AIProxyMiddleware, authenticate=authenticate, config={
    "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}})
# Added last, so outermost: the session is in the scope the hook reads.
app.add_middleware(SessionMiddleware, secret_key="demo-only-not-secret")
