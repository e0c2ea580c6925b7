"""A Quart app whose signed-in users (Quart's session cookie) or API-key holders call its AI
routes as themselves, through the gateway's `authenticate` hook.

    uvicorn examples.auth_hook_quart:app
"""

from http.cookies import SimpleCookie

from quart import Quart, session

from aiproxy_middleware import AIProxyMiddleware

USERS_BY_KEY = {"key-of-ada": "ada"}  # the app's own user store
app = Quart(__name__)
app.secret_key = "demo-only-not-secret"


@app.post("/login/<name>")
async def login(name: str) -> dict[str, str]:
    session["user"] = name  # (a real app checks a password here)
    return {"user": name}


def authenticate(scope: dict) -> str | None:
    """The API key's user, else the session's: Quart's own signed cookie, read with its
    own serializer."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    scheme, _, key = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key in USERS_BY_KEY:
        return USERS_BY_KEY[key]
    cookie = SimpleCookie(headers.get("cookie", "")).get(app.config["SESSION_COOKIE_NAME"])
    if cookie is None:
        return None
    serializer = app.session_interface.get_signing_serializer(app)
    try:
        data = serializer.loads(cookie.value,
                                max_age=app.permanent_session_lifetime.total_seconds())
    except Exception:  # a forged or expired cookie
        return None
    return data.get("user")


app.asgi_app = AIProxyMiddleware(app.asgi_app, authenticate=authenticate, config={
    "routes": [{"path": "/ai", "provider": {"type": "mock", "modelMapping": {"*": "mock-echo-1"}}}],
})
