"""An ASGI middleware that serves one OpenAI-compatible API in front of many LLM providers."""

from aiproxy_middleware.config.higress import Config, load_config
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.middleware import AIProxyMiddleware

__all__ = ["AIProxyMiddleware", "Config", "ConfigError", "load_config"]
__version__ = "0.1.0"
