"""An ASGI middleware that serves one OpenAI-compatible API in front of many LLM providers.

The public API is what this module exports; every other module is private and may change.
"""

from aiproxy_middleware.access.gate import Authenticate
from aiproxy_middleware.config.higress import Config, load_config
from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.middleware import AIProxyMiddleware
from aiproxy_middleware.observe.summary import Summary, SummaryHook
from aiproxy_middleware.runtime.tokens import TokenStore
from aiproxy_middleware.state.redis_link import RedisSettings
from aiproxy_middleware.state.redis_store import RedisStore
from aiproxy_middleware.state.redis_tokens import RedisTokenStore
from aiproxy_middleware.state.store import MemoryStore, SharedStore
from aiproxy_middleware.state.token_health import MemoryTokenStore

__all__ = ["AIProxyMiddleware", "Authenticate", "Config", "ConfigError", "MemoryStore", "MemoryTokenStore",
           "RedisSettings", "RedisStore", "RedisTokenStore", "SharedStore", "Summary",
           "SummaryHook", "TokenStore", "load_config"]
__version__ = "0.1.0"
