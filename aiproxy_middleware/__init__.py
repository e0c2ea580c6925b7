"""An ASGI middleware that serves one OpenAI-compatible API in front of many LLM providers."""

from .config import Config, load_config
from .errors import ConfigError
from .middleware import AIProxyMiddleware

__all__ = ["AIProxyMiddleware", "Config", "ConfigError", "load_config"]
__version__ = "0.1.0"
