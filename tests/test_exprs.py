"""APISIX `vars` expressions, variable lookup and chash keys (aiproxy_middleware.config.apisix.exprs)."""

from __future__ import annotations

from typing import Any

import pytest

from aiproxy_middleware.errors import ConfigError
from aiproxy_middleware.config.apisix.exprs import (HASH_ON, RequestView, Vars, hash_key, hash_key_uses_body,
                                      lookup)


def view(path: str = "/v1/chat/completions", query: bytes = b"",
         headers: dict[str, Any] | None = None, body: Any = None, method: str = "POST",
         client: str | None = "10.1.2.3") -> RequestView:
    """A request; a header given as a list is sent once per value."""
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in (headers or {}).items():
        for v in value if isinstance(value, list) else [value]:
            pairs.append((name.lower().encode(), v.encode("latin-1")))
    return RequestView(method, path, query, pairs, body, client)


def match(spec: list[Any], v: RequestView) -> bool:
    return Vars.compile(spec, "routes[0].vars").matches(v)


BODY = {"model": "gpt-4o", "n": 5, "temperature": 0.5, "stream": True,
        "meta": {"name": "openai", "tags": ["a", "b"]},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}


# --- lookup ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("var", "expected"), [
    ("post_arg.model", "gpt-4o"),
    ("post_arg.meta.name", "openai"),
    ("post_arg.meta.tags", ["a", "b"]),
    ("post_arg.meta.tags.1", "b"),
    ("post_arg.messages.0.role", "system"),
    ("post_arg.messages[1].content", "hi"),
    ("post_arg.messages.2.role", None),
    ("post_arg.messages.x", None),
    ("post_arg.messages.-1.role", None),
    ("post_arg.model.name", None),
    ("post_arg.missing", None),
    ("post_arg.meta.missing.deeper", None),
    ("post_arg.", None),
])
def test_body_paths(var: str, expected: Any) -> None:
    assert lookup(var, view(body=BODY)) == expected


@pytest.mark.parametrize("body", [None, [{"model": "x"}], "model", 5])
def test_body_paths_need_an_object(body: Any) -> None:
    assert lookup("post_arg.model", view(body=body)) is None
    assert lookup("post_arg.0.model", view(body=body)) is None


def test_headers() -> None:
    v = view(headers={"X-Custom-Thing": "one", "Accept": ["a", "b"], "x_under": "u"})
    assert lookup("http_x_custom_thing", v) == "one"
    assert lookup("http_X_CUSTOM_THING", v) == "one"
    assert lookup("http_x-custom-thing", v) == "one"
    assert lookup("http_accept", v) == "a, b"
    assert lookup("http_x_under", v) == "u"
    assert lookup("http_x_other", v) is None


def test_query_args() -> None:
    v = view(query=b"name=hello%20world&plus=a+b&n=1&n=2&empty=&flag&Case=X&u=%E4%BD%A0")
    assert lookup("arg_name", v) == "hello world"
    assert lookup("arg_plus", v) == "a b"
    assert lookup("arg_n", v) == "1"
    assert lookup("arg_empty", v) == ""
    assert lookup("arg_flag", v) == ""
    assert lookup("arg_case", v) == "X"
    assert lookup("arg_u", v) == "你"
    assert lookup("arg_missing", v) is None
    assert lookup("arg_x", view(query=b"%zz=%ff")) is None


def test_cookies() -> None:
    v = view(headers={"Cookie": ["a=1; session=abc%20d", "b=2;c"]})
    assert lookup("cookie_session", v) == "abc%20d"
    assert lookup("cookie_a", v) == "1"
    assert lookup("cookie_b", v) == "2"
    assert lookup("cookie_c", v) is None
    assert lookup("cookie_missing", v) is None
    assert lookup("http_cookie", v) == "a=1; session=abc%20d; b=2;c"
    assert lookup("cookie_a", view()) is None


def test_request_variables() -> None:
    v = view(path="/v1/x", query=b"a=1", headers={"Host": "API.Example.com:8443"}, method="PUT")
    assert lookup("uri", v) == "/v1/x"
    assert lookup("request_uri", v) == "/v1/x?a=1"
    assert lookup("query_string", v) == "a=1"
    assert lookup("request_method", v) == "PUT"
    assert lookup("host", v) == "api.example.com"
    assert lookup("remote_addr", v) == "10.1.2.3"
    assert lookup("request_uri", view(path="/p")) == "/p"
    assert lookup("query_string", view()) is None
    assert lookup("host", view(headers={"Host": "[::1]:8080"})) == "[::1]"
    assert lookup("host", view(headers={"Host": "example.com"})) == "example.com"
    assert lookup("host", view()) is None
    assert lookup("remote_addr", view(client=None)) is None


def test_unknown_variables_are_none() -> None:
    assert lookup("no_such_var", view()) is None
    assert match([["no_such_var", "==", "x"]], view()) is False
    assert match([["no_such_var", "~=", "x"]], view()) is True


# --- operators ------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "expected"), [
    (["post_arg.model", "==", "gpt-4o"], True),
    (["post_arg.model", "==", "gpt-4"], False),
    (["post_arg.model", "~=", "gpt-4"], True),
    (["post_arg.model", "~=", "gpt-4o"], False),
    (["post_arg.n", ">", 4], True),
    (["post_arg.n", ">", 5], False),
    (["post_arg.n", ">=", 5], True),
    (["post_arg.n", ">=", 6], False),
    (["post_arg.n", "<", 6], True),
    (["post_arg.n", "<", 5], False),
    (["post_arg.n", "<=", 5], True),
    (["post_arg.n", "<=", 4.5], False),
    (["post_arg.temperature", "<", "0.7"], True),
    (["post_arg.model", ">", 1], False),
    (["post_arg.stream", ">", 0], False),
    (["post_arg.model", "~~", "^gpt-[0-9]"], True),
    (["post_arg.model", "~~", "^claude"], False),
    (["post_arg.model", "~~", "GPT"], False),
    (["post_arg.model", "~*", "GPT"], True),
    (["post_arg.model", "~*", "CLAUDE"], False),
    (["post_arg.n", "~~", "^5$"], True),
    (["post_arg.meta", "~~", "."], False),
    (["post_arg.model", "in", ["gpt-4o", "gpt-4o-mini"]], True),
    (["post_arg.model", "in", ["gpt-4", "o1"]], False),
    (["post_arg.n", "in", ["5", 6]], True),
    (["post_arg.meta.tags", "has", "b"], True),
    (["post_arg.meta.tags", "has", "c"], False),
    (["post_arg.model", "has", "4o"], True),
    (["post_arg.model", "has", "claude"], False),
    (["post_arg.meta", "has", "name"], False),
    (["remote_addr", "ipmatch", "10.0.0.0/8"], True),
    (["remote_addr", "ipmatch", ["192.168.0.0/16", "10.1.2.3"]], True),
    (["remote_addr", "ipmatch", ["192.168.0.0/16", "::1"]], False),
    (["remote_addr", "ipmatch", "10.1.2.0/24"], True),
    (["post_arg.model", "ipmatch", "10.0.0.0/8"], False),
])
def test_operators(expr: list[Any], expected: bool) -> None:
    v = view(body=BODY)
    assert match([expr], v) is expected
    negated = [expr[0], "!", *expr[1:]]
    assert match([negated], v) is (not expected)


def test_ipmatch_ipv6_and_mapped() -> None:
    assert match([["remote_addr", "ipmatch", "2001:db8::/32"]], view(client="2001:db8::5"))
    assert match([["remote_addr", "ipmatch", "127.0.0.0/8"]], view(client="::ffff:127.0.0.1"))
    assert not match([["remote_addr", "ipmatch", "127.0.0.0/8"]], view(client="not-an-ip"))
    assert not match([["remote_addr", "ipmatch", "127.0.0.0/8"]], view(client=None))


def test_number_string_comparisons() -> None:
    v = view(query=b"n=5&f=2.50&s=abc&t=true", body={"n": 5, "f": 5.0, "s": "5", "b": True})
    assert match([["post_arg.n", "==", 5]], v)
    assert match([["post_arg.n", "==", "5"]], v)
    assert match([["post_arg.f", "==", 5]], v)
    assert match([["post_arg.s", "==", 5]], v)
    assert match([["arg_n", "==", 5]], v)
    assert match([["arg_n", "==", "5"]], v)
    assert match([["arg_n", "==", 5.0]], v)
    assert not match([["arg_f", "==", 2.5]], v)           # compared as text: "2.50" vs "2.5"
    assert match([["arg_f", ">=", 2.5], ["arg_f", "<=", "2.5"]], v)
    assert match([["arg_n", ">", "4"]], v)
    assert not match([["arg_s", ">", 0]], v)
    assert not match([["arg_s", "<", 0]], v)
    assert match([["arg_t", "==", True]], v)
    assert match([["post_arg.b", "==", True]], v)
    assert not match([["post_arg.b", "==", 1]], v)
    assert not match([["post_arg.n", "==", True]], v)
    assert match([["arg_n", "in", [4, 5]]], v)


def test_missing_variable_matches_only_not_equal_and_negations() -> None:
    v = view(body={})
    for op, value in [("==", "x"), (">", 1), (">=", 1), ("<", 1), ("<=", 1), ("~~", ".*"),
                      ("~*", ""), ("in", ["x"]), ("has", "x"), ("ipmatch", "0.0.0.0/0")]:
        assert not match([["post_arg.model", op, value]], v), op
        assert match([["post_arg.model", "!", op, value]], v), op
    assert match([["post_arg.model", "~=", "x"]], v)
    assert not match([["post_arg.model", "!", "~=", "x"]], v)


# --- logic ----------------------------------------------------------------------------------

def test_top_level_is_and_and_empty_matches_everything() -> None:
    v = view(body=BODY, query=b"a=1")
    assert match([["post_arg.model", "==", "gpt-4o"], ["arg_a", "==", "1"]], v)
    assert not match([["post_arg.model", "==", "gpt-4o"], ["arg_a", "==", "2"]], v)
    assert Vars.compile([], "x").matches(v)
    assert Vars.compile(None, "x").matches(v)


def test_nested_logic() -> None:
    v = view(body=BODY, query=b"weight=12&height=20")
    assert match(["OR", ["arg_weight", ">", 100], ["post_arg.model", "==", "gpt-4o"]], v)
    assert not match(["OR", ["arg_weight", ">", 100], ["post_arg.model", "==", "x"]], v)
    assert not match(["!OR", ["arg_weight", ">", 100], ["post_arg.model", "==", "gpt-4o"]], v)
    assert match(["!OR", ["arg_weight", ">", 100], ["post_arg.model", "==", "x"]], v)
    assert match(["AND", ["arg_weight", ">", 10], ["arg_height", ">", 15]], v)
    assert not match(["!AND", ["arg_weight", ">", 10], ["arg_height", ">", 15]], v)
    assert match(["!AND", ["arg_weight", ">", 10], ["arg_height", ">", 25]], v)
    # name == json AND NOT (weight > 10 OR NOT height > 15), nested inside a top-level list
    nested = [["post_arg.model", "==", "gpt-4o"],
              ["!OR", ["arg_weight", ">", 10], ["arg_height", "!", ">", 15]]]
    assert not match(nested, v)
    assert match(nested, view(body=BODY, query=b"weight=5&height=20"))
    deep = ["OR", ["arg_x", "==", "1"],
            ["AND", ["post_arg.n", "==", 5],
             ["OR", ["arg_weight", "<", 0], ["arg_height", "==", 20]]]]
    assert match(deep, v)
    assert not match(deep, view(body={"n": 6}, query=b"height=20"))


def test_route_choice_by_model() -> None:
    routes = [Vars.compile([["post_arg.model", "==", "openai"]], "routes[0].vars"),
              Vars.compile([["post_arg.model.name", "==", "openai"]], "routes[1].vars")]
    flat, nested = view(body={"model": "openai"}), view(body={"model": {"name": "openai"}})
    assert [r.matches(flat) for r in routes] == [True, False]
    assert [r.matches(nested) for r in routes] == [False, True]


def test_matching_never_raises() -> None:
    odd = view(body={"model": {"deep": [1, {"x": None}]}, "n": float("nan")}, client="::zz",
               headers={"Host": ":::", "Cookie": ";;=;"}, query=b"%%%&&=")
    specs: list[Any] = [["post_arg.model", op, v] for op, v in [
        ("==", 1), ("~=", [1]), (">", 1), ("~~", "x"), ("in", [{"a": 1}]), ("has", 1),
        ("ipmatch", "::/0")]]
    specs += [["post_arg.n", ">", 0], ["post_arg.n", "==", "nan"], ["host", "~~", "."],
              ["cookie_", "==", ""], ["arg_", "==", ""], ["remote_addr", "ipmatch", "::/0"]]
    for spec in specs:
        Vars.compile([spec], "x").matches(odd)


# --- compile errors -------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "message"), [
    ([["arg_a", "=~", "x"]], "routes[1].vars[0]: unknown operator '=~'"),
    ([["arg_a", "==", "x"], ["arg_b", "like", "x"]], "routes[1].vars[1]: unknown operator 'like'"),
    ([["arg_a", "==", "x"], ["arg_a", 5, "x"]], "routes[1].vars[1]: unknown operator"),
    ([["arg_a", "=="]], "routes[1].vars[0]: an expression has 3 or 4 elements, got 2"),
    ([["arg_a", "!", "==", "x", "y"]], "routes[1].vars[0]: an expression has 3 or 4 elements"),
    ([["arg_a", "not", "==", "x"]], "routes[1].vars[0]: the second of 4 elements must be '!'"),
    ([[5, "==", "x"]], "routes[1].vars[0]: the variable name must be a non-empty string"),
    ([["", "==", "x"]], "routes[1].vars[0]: the variable name"),
    ([["arg_a", "in", "x"]], "routes[1].vars[0]: 'in' needs a list"),
    ([["arg_a", "~~", "("]], "routes[1].vars[0]: invalid regular expression"),
    ([["arg_a", "~*", 5]], "routes[1].vars[0]: '~*' needs a regular expression string"),
    ([["arg_a", ">", "ten"]], "routes[1].vars[0]: '>' needs a number"),
    ([["arg_a", "<=", True]], "routes[1].vars[0]: '<=' needs a number"),
    ([["arg_a", "==", None]], "routes[1].vars[0]: the value is null"),
    ([["arg_a", "has", ["x"]]], "routes[1].vars[0]: 'has' needs a string"),
    ([["remote_addr", "ipmatch", "10.0.0.0/33"]], "routes[1].vars[0]: invalid CIDR"),
    ([["remote_addr", "ipmatch", ["10.0.0.0/8", "nope"]]], "routes[1].vars[0]: invalid CIDR"),
    ([["remote_addr", "ipmatch", []]], "routes[1].vars[0]: 'ipmatch' needs a CIDR"),
    ([["remote_addr", "ipmatch", [8]]], "routes[1].vars[0]: 'ipmatch' needs a CIDR"),
    (["arg_a", "==", "x"], "routes[1].vars[0]: expected an expression list, got 'arg_a'"),
    ([[]], "routes[1].vars[0]: expected an expression list"),
    ("arg_a", "routes[1].vars: expected a list of expressions"),
    (["OR"], "routes[1].vars: 'OR' needs at least one expression"),
    (["OR", ["arg_a", "==", "x"], ["arg_b", "=~", "x"]], "routes[1].vars[2]: unknown operator"),
    ([["arg_a", "==", "x"], ["!OR", ["arg_b", "==", "y"], ["AND", ["arg_c", "~~", "["]]]],
     "routes[1].vars[1][2][1]: invalid regular expression"),
    ([["AND"]], "routes[1].vars[0]: 'AND' needs at least one expression"),
])
def test_compile_errors_name_the_path(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Vars.compile(spec, "routes[1].vars")
    assert str(info.value).startswith(message), str(info.value)


def test_uses_body() -> None:
    assert Vars.compile([["post_arg.model", "==", "x"]], "v").uses_body()
    nested = [["arg_a", "==", "x"], ["OR", ["uri", "==", "/"], ["post_arg.a.b", "!", "==", 1]]]
    assert Vars.compile(nested, "v").uses_body()
    assert not Vars.compile([["arg_a", "==", "x"], ["http_post_arg", "==", "x"]], "v").uses_body()
    assert not Vars.compile([], "v").uses_body()
    assert not Vars.compile(None, "v").uses_body()


# --- hash keys ------------------------------------------------------------------------------

def test_hash_key_for_every_hash_on() -> None:
    v = view(path="/v1/chat", query=b"user=u%201", body=BODY,
             headers={"X-User-Id": "42", "Cookie": "sid=s-9", "X-Consumer-Username": "alice"})
    assert hash_key("vars", "arg_user", v) == "u 1"
    assert hash_key("vars", "post_arg.n", v) == "5"
    assert hash_key("vars", "post_arg.stream", v) == "true"
    assert hash_key("vars", "arg_missing", v) == ""
    assert hash_key("vars", None, v) == ""
    assert hash_key("header", "X-User-Id", v) == "42"
    assert hash_key("header", "x_user_id", v) == "42"
    assert hash_key("header", "X-Missing", v) == ""
    assert hash_key("cookie", "sid", v) == "s-9"
    assert hash_key("cookie", "nope", v) == ""
    assert hash_key("consumer", None, v) == "alice"
    assert hash_key("consumer", None, view(client="10.9.9.9")) == "10.9.9.9"
    assert hash_key("consumer", None, view(client=None)) == ""
    assert hash_key("vars_combinations", "$request_method:${post_arg.model}:$arg_user|$uri", v) \
        == "POST:gpt-4o:u 1|/v1/chat"
    assert hash_key("vars_combinations", "${http_x_user_id}-$arg_missing-${post_arg.nope}", v) \
        == "42--"
    assert hash_key("vars_combinations", r"cost \$5 $arg_user", v) == "cost $5 u 1"
    assert hash_key("vars_combinations", "static", v) == "static"
    assert hash_key("vars_combinations", "a${}b$", v) == "ab$"
    assert {"vars", "header", "cookie", "consumer", "vars_combinations"} == HASH_ON
    with pytest.raises(ConfigError, match="unknown hash_on 'ip'"):
        hash_key("ip", None, v)


def test_hash_key_uses_body() -> None:
    assert hash_key_uses_body("vars", "post_arg.model")
    assert not hash_key_uses_body("vars", "arg_model")
    assert hash_key_uses_body("vars_combinations", "$arg_a-${post_arg.user}")
    assert not hash_key_uses_body("vars_combinations", "$arg_a-$post_arg")
    assert not hash_key_uses_body("header", "post_arg.model")
    assert not hash_key_uses_body("consumer", None)
