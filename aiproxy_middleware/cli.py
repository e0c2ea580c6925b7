"""`aiproxy serve CONFIG`: run the gateway on its own, in front of an app that answers 404."""

from __future__ import annotations

import argparse
import sys

from .config import load_config
from .errors import ConfigError


async def _not_found(scope: dict, receive: object, send: object) -> None:
    """The app behind a stand-alone gateway: every non-AI path is 404 in OpenAI's format.

    It has no lifespan of its own: the middleware answers lifespan for it.
    """
    if scope["type"] != "http":
        return
    body = (b'{"error":{"message":"not found: this gateway serves /v1/chat/completions and'
            b' /v1/embeddings","type":"invalid_request_error","code":"not_found"}}')
    await send({"type": "http.response.start", "status": 404,  # type: ignore[operator]
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a config file with uvicorn")
    serve.add_argument("config", help="path to the YAML config")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"aiproxy: invalid config: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(f"{args.config}: OK ({len(config.routes) + len(config.all_apisix())} route(s))")
        return 0
    import uvicorn

    from .middleware import AIProxyMiddleware

    app = AIProxyMiddleware(_not_found, config=config)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
