"""`aiproxy serve CONFIG`: run the gateway on its own, in front of an app that answers 404."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from aiproxy_middleware.config.higress import Config, load_config
from aiproxy_middleware.config.model import Route
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.serve.log_format import LOG_FORMATS, LOG_LEVELS, log_config

CONFIG_ENV = "AIPROXY_CONFIG"
"""The config path `app_from_env` reads: how `--workers N` hands it to each worker."""


async def _not_found(scope: dict[str, Any], receive: object, send: object) -> None:
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


def app_from_env() -> Any:
    """The gateway for the config named by `AIPROXY_CONFIG`: the factory each worker runs."""
    from aiproxy_middleware.middleware import AIProxyMiddleware

    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"{CONFIG_ENV} is not set: it names the config file to serve")
    return AIProxyMiddleware(_not_found, config=served(load_config(path)))


def served(config: Config) -> Config:
    """`config` as `aiproxy serve` runs it: every AI request's summary is logged unless the
    config says `summaries: false`. Higress-dialect routes do so already; APISIX routes that
    leave `logging.summaries` unset log too here (in an app, they keep APISIX's default: off)."""
    def logged(route: Route) -> Route:
        if route.observe.summaries is not None:
            return route
        return replace(route, observe=replace(route.observe, summaries=True))

    return replace(config, apisix=MappingProxyType({p: tuple(map(logged, rs))
                                                    for p, rs in config.apisix.items()}),
                   apisix_prefixed=tuple(map(logged, config.apisix_prefixed)))


def _bounded(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"expected a whole number {span}, got {text!r}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds above 0 and up to 3600, got {text!r}")
    return value


def _serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("config", help="path to the YAML config")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_bounded(1, 65535), default=8000)
    serve.add_argument("--workers", type=_bounded(1, 512), default=1,
                       help="worker processes (default 1)")
    serve.add_argument("--limit-concurrency", type=_bounded(1), default=500,
                       help="connections or requests per worker at once before new requests get"
                            " 503 (default 500)")
    serve.add_argument("--timeout-keep-alive", type=_bounded(1, 3600), default=5,
                       help="seconds an idle keep-alive connection is kept (default 5)")
    serve.add_argument("--timeout-graceful-shutdown", type=_bounded(1, 3600), default=30,
                       help="seconds requests in flight may finish after a stop signal"
                            " (default 30)")
    serve.add_argument("--backlog", type=_bounded(1, 65535), default=2048,
                       help="connections waiting to be accepted (default 2048)")
    serve.add_argument("--timeout-request-headers", type=_seconds, default=10.0,
                       help="seconds a request line and headers may take to arrive, from the"
                            " connection's opening or the request's first byte (default 10)")
    serve.add_argument("--limit-request-headers", type=_bounded(1024, 1024 * 1024),
                       default=16384, help="bytes a request line and headers may hold"
                                           " (default 16384; 431 or 400 past it)")
    serve.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                       help="HTTP/1.1 parser (default auto: httptools when installed, else h11)")
    serve.add_argument("--log-level", choices=tuple(LOG_LEVELS), default="info",
                       help="uvicorn's and the gateway's (default info: one line per AI"
                            " request; warning hides those)")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                       help="text lines, or one JSON object per line (default text)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aiproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_options(sub.add_parser("serve", help="serve a config file with uvicorn"))
    check = sub.add_parser("check", help="validate a config file: print its routes, or its"
                                         " problems (exit status 2)")
    check.add_argument("config")
    sub.add_parser("schema", help="print the config's JSON Schema (for editors:"
                                  " aiproxy schema > aiproxy.schema.json)")
    args = parser.parse_args(argv)
    if args.command == "schema":
        import json

        from aiproxy_middleware.config.json_schema import config_schema

        try:
            print(json.dumps(config_schema(), indent=1), flush=True)
        except BrokenPipeError:  # `aiproxy schema | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.command == "check":
        from aiproxy_middleware.serve.check_report import check as check_config

        return check_config(args.config, sys.stdout, sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"aiproxy: invalid config: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from aiproxy_middleware.middleware import AIProxyMiddleware
    from aiproxy_middleware.serve.protocols import HEADER_LIMIT_ENV, HEADER_TIMEOUT_ENV, PROTOCOLS

    http = args.http
    if http != "h11" and not _importable("httptools"):
        if http == "httptools":
            print("aiproxy: --http httptools: the httptools package is not installed",
                  file=sys.stderr)
            return 2
        http = "h11"
    elif http == "auto":
        http = "httptools"
    os.environ[HEADER_TIMEOUT_ENV] = str(args.timeout_request_headers)  # workers inherit them
    os.environ[HEADER_LIMIT_ENV] = str(args.limit_request_headers)

    app: Any
    if args.workers > 1:  # each worker process builds its own gateway from the same file
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
        app = "aiproxy_middleware.serve.cli:app_from_env"
    else:
        app = AIProxyMiddleware(_not_found, config=served(config))
    uvicorn.run(app, factory=args.workers > 1, host=args.host, port=args.port,
                workers=args.workers, limit_concurrency=args.limit_concurrency,
                timeout_keep_alive=args.timeout_keep_alive,
                timeout_graceful_shutdown=args.timeout_graceful_shutdown,
                backlog=args.backlog, http=PROTOCOLS[http],
                h11_max_incomplete_event_size=args.limit_request_headers,
                ws="none", log_level=args.log_level,  # it serves no WebSockets
                # uvicorn applies it in each worker process as well
                log_config=log_config(args.log_level, args.log_format))
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
