"""`aiproxy check CONFIG`: what a config loads to (each route's path, dialect, provider and
models), or its problems, each with its field path.

Nothing here prints a value from the config other than paths, provider names and model names:
API tokens, auth headers, consumer credentials and Redis passwords never reach the output
(the loader's errors name fields, not values).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from aiproxy_middleware.config.higress import _ENV, Config, load_config
from aiproxy_middleware.config.model import Api, ApisixBody, HigressBody, Match, Route
from aiproxy_middleware.errors import ConfigError

__all__ = ["check", "describe"]

ERROR_PREFIX = "aiproxy: invalid config: "


@dataclass(frozen=True, slots=True)
class Problems:
    found: list[str]
    note: str
    """What the list holds: every route entry's first problem, or the problems up to where
    checking stopped."""


_STOPPED = "checking stopped here: more problems may follow once this is fixed"
_MISSING = "set them and check again: more problems may follow"
_PER_ENTRY = "each route entry's first is shown: fix them and check again for more"


def check(path: str, out: TextIO, err: TextIO) -> int:
    """Print what `path` loads to (0) or its problems (2)."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        problems = _problems(path, exc)
        for problem in problems.found:
            print(f"{ERROR_PREFIX}{problem}", file=err)
        print(f"aiproxy: {len(problems.found)} problem(s); {problems.note}", file=err)
        return 2
    routes = [*config.routes, *config.all_apisix()]
    print(f"{path}: OK ({len(routes)} route(s))", file=out)
    for line in describe(config):
        print(f"  {line}", file=out)
    return 0


def describe(config: Config) -> Iterator[str]:
    """One line per route: its path, dialect, provider and the models it names."""
    for route in config.routes:
        yield _higress(route, config.catch_all)
    for route in config.all_apisix():
        yield _apisix(route)


def _higress(route: Route, catch_all: bool) -> str:
    where = "every AI path (provider)" if catch_all else route.path
    text = f"{where}: higress, provider {route.candidates[0].kind}"
    if route.api is Api.ORIGINAL:
        text += ", protocol original"
    if isinstance(route.body, HigressBody):
        mapping = route.provider.config.model_mapping
        if mapping:
            text += ", models " + ", ".join(f"{k or '(empty)'} -> {v or '(as asked)'}"
                                            for k, v in mapping.items())
    return text


def _apisix(route: Route) -> str:
    path = route.path + ("*" if route.match is Match.STARTS else "")
    name = f" ({route.name})" if route.name not in (route.path, path) else ""
    old = isinstance(route.body, ApisixBody) and route.body.schema_311
    if route.balancer is not None:
        kinds = ", ".join(f"{c.name} [{c.kind}{_model(c.options)}]" for c in route.candidates)
        return f"{path}{name}: apisix ai-proxy-multi, instances {kinds}"
    c = route.candidates[0]
    dialect = "ai-proxy (3.11 model)" if old else "ai-proxy"
    return f"{path}{name}: apisix {dialect}, provider {c.kind}{_model(c.options)}"


def _model(options: Any) -> str:
    model = options.get("model")
    return f", model {model}" if isinstance(model, str) and model else ""


def _problems(path: str, first: ConfigError) -> Problems:
    """More of the config's problems than the first, where one pass finds them cheaply: every
    missing environment variable, and each `routes` entry's first problem (an entry found
    wrong is replaced by a stand-in and the config loaded again). A problem outside the
    route entries stops the search."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, ValueError):
        return Problems([str(first)], _STOPPED)
    if not isinstance(data, dict):
        return Problems([str(first)], _STOPPED)
    missing = list(_missing_variables(data, ""))
    if missing:
        return Problems(missing, _MISSING)
    routes = data.get("routes")
    found = [str(first)]
    if not isinstance(routes, list):
        return Problems(found, _STOPPED)
    routes = list(routes)
    for _ in range(len(routes)):
        index = _entry_index(found[-1], len(routes))
        if index is None:
            return Problems(found, _STOPPED)
        routes[index] = {"path": f"/.aiproxy-check-stand-in-{index}", "provider": {"type": "mock"}}
        try:
            load_config({**data, "routes": routes})
        except ConfigError as exc:
            if str(exc) in found:
                return Problems(found, _STOPPED)
            found.append(str(exc))
            continue
        return Problems(found, _PER_ENTRY)
    return Problems(found, _STOPPED)


def _entry_index(problem: str, count: int) -> int | None:
    if not problem.startswith("routes["):
        return None
    number = problem[len("routes["):].split("]", 1)[0]
    return int(number) if number.isdigit() and int(number) < count else None


def _missing_variables(value: Any, where: str) -> Iterator[str]:
    """Each `${NAME}` the environment lacks, where the loader's expansion would stop."""
    if isinstance(value, str):
        for m in _ENV.finditer(value):
            if m.group(1) is not None and m.group(1) not in os.environ:
                yield f"{where or 'config'}: environment variable {m.group(1)} is not set"
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _missing_variables(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _missing_variables(v, f"{where}[{i}]")
