"""What `aiproxy serve` prints: uvicorn's lines and the gateway's (each AI request's summary
among them), as text or as one JSON object per line.

`log_config` builds the `logging.config.dictConfig` dict handed to uvicorn, which applies it
in the main process and again in each worker process (`--workers N`).

Secrets: the gateway's loggers carry `secrets.SecretFilter` (every provider installs it), which
masks configured secrets in a record's message and traceback; that covers the gateway's text
lines. A JSON line also holds the summary's fields (outside the message) and uvicorn's error
lines hold tracebacks the gateway never saw, so those formatters mask the whole line again.
uvicorn's access lines (the client's request line and the status) are left as they are: the
mask costs a few microseconds per provider and per line.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import msgspec
from uvicorn.logging import DefaultFormatter

from aiproxy_middleware.safety.secrets import known_secrets, scrub_text

LOG_FORMATS = ("text", "json")
LOG_LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
              "info": logging.INFO, "debug": logging.DEBUG, "trace": 5}  # uvicorn's TRACE
GATEWAY_LOGGER = "aiproxy_middleware"
TEXT_FORMAT = "%(levelprefix)s %(name)s: %(message)s"
SUMMARY_MESSAGE = "request summary"
"""The `message` of a summary's JSON line (its fields follow it)."""
_HERE = __name__


def _masked(line: str) -> str:
    secrets = known_secrets()
    return scrub_text(line, secrets) if secrets else line


class MaskedTextFormatter(DefaultFormatter):
    """uvicorn's own text format, with every configured secret masked in the whole line."""

    def format(self, record: logging.LogRecord) -> str:
        return _masked(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: `time` (UTC, ISO 8601), `level`, `logger`, `message`, a
    summary's fields (as `Summary.as_dict()` gives them) when the record is one, and `exc`
    (the traceback) when there is one. `masked`: every configured secret is masked."""

    def __init__(self, masked: bool = True) -> None:
        super().__init__()
        self.masked = masked

    def format(self, record: logging.LogRecord) -> str:
        summary = getattr(record, "aiproxy_summary", None)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": SUMMARY_MESSAGE if isinstance(summary, dict) else record.getMessage(),
        }
        if isinstance(summary, dict):
            for key, value in summary.items():
                out.setdefault(key, value)  # never over the four above
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        line = msgspec.json.encode(out, enc_hook=str).decode()
        return _masked(line) if self.masked else line


def log_config(level: str, form: str) -> dict[str, Any]:
    """uvicorn's logging set-up plus the gateway's loggers at `level` (one of `LOG_LEVELS`),
    all in `form` (`text` or `json`), the gateway's lines on stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    formatters = config["formatters"]
    if form == "json":
        formatters["default"] = {"()": f"{_HERE}.JsonFormatter"}
        formatters["access"] = {"()": f"{_HERE}.JsonFormatter", "masked": False}
        formatters["gateway"] = {"()": f"{_HERE}.JsonFormatter"}
    else:
        formatters["default"] = {**formatters["default"], "()": f"{_HERE}.MaskedTextFormatter"}
        # SecretFilter on the gateway's loggers has masked these already: no second pass.
        formatters["gateway"] = {"()": "uvicorn.logging.DefaultFormatter", "fmt": TEXT_FORMAT}
    config["handlers"]["gateway"] = {"formatter": "gateway", "class": "logging.StreamHandler",
                                     "stream": "ext://sys.stderr"}
    config["loggers"][GATEWAY_LOGGER] = {"handlers": ["gateway"], "level": LOG_LEVELS[level],
                                         "propagate": False}
    return config
