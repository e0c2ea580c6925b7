"""Active health checks: the counters and thresholds, the probe loop, the HTTP and TCP probes."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiproxy_middleware.config.apisix.schema import ActiveCheck
from aiproxy_middleware.runtime.health import HealthChecker, HealthMonitor, http_probe
from upstream_server import Served, free_port, read_request


def active(**conf: Any) -> ActiveCheck:
    return msgspec.convert(conf, ActiveCheck)


class Script:
    """A fake probe: returns the scripted statuses, raises the scripted exceptions, or
    sleeps when given a float; repeats the last step when the script runs out."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.calls = 0

    async def __call__(self) -> int:
        step = self.steps[min(self.calls, len(self.steps) - 1)]
        self.calls += 1
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, float):
            await asyncio.sleep(step)
            return 200
        assert isinstance(step, int)
        return step


async def drive(checker: HealthChecker, script: Script, *steps: object) -> list[bool]:
    """Probe once per step; the health state after each."""
    script.steps, script.calls = list(steps), 0
    states = []
    for _ in steps:
        await checker.probe_once()
        states.append(checker.healthy)
    return states


CHECK = active(healthy={"successes": 2},
               unhealthy={"http_failures": 3, "timeouts": 2, "tcp_failures": 2})


async def test_http_failures_then_successes_flip_both_ways(caplog):
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    script = Script()
    c = HealthChecker("inst-a", CHECK, script)
    assert c.healthy
    assert await drive(c, script, 500, 503, 404) == [True, True, False]
    assert "'inst-a' is now unhealthy (status 404, 3 in a row)" in caplog.text
    assert await drive(c, script, 200, 302) == [False, True]
    assert "'inst-a' is now healthy (status 302, 2 in a row)" in caplog.text


async def test_default_thresholds_are_apisix_ones():
    script = Script()
    c = HealthChecker("a", ActiveCheck(), script)
    assert await drive(c, script, *[500] * 5) == [True] * 4 + [False]
    assert await drive(c, script, 200, 200) == [False, True]
    assert await drive(c, script, TimeoutError(), TimeoutError(), TimeoutError()) == [
        True, True, False]
    await drive(c, script, 200, 200)
    assert await drive(c, script, OSError(), OSError()) == [True, False]


async def test_a_success_resets_failure_counters():
    script = Script()
    c = HealthChecker("a", CHECK, script)
    assert await drive(c, script, 500, 500, 200, 500, 500, 200, TimeoutError(), 200,
                       TimeoutError(), OSError(), 200, OSError()) == [True] * 12
    assert await drive(c, script, 500) == [True]
    assert await drive(c, script, 500) == [True]
    assert await drive(c, script, 500) == [False]


async def test_a_failure_resets_the_success_counter():
    script = Script()
    c = HealthChecker("a", CHECK, script)
    await drive(c, script, 500, 500, 500)
    assert await drive(c, script, 200, 500, 200, TimeoutError(), 200, OSError(), 200) == [
        False] * 7
    assert await drive(c, script, 200) == [True]


async def test_failure_kinds_count_separately():
    # lua-resty-healthcheck: a failure resets only the success counter, so failures of
    # other kinds in between do not restart the count of HTTP failures.
    script = Script()
    c = HealthChecker("a", CHECK, script)
    assert await drive(c, script, 500, TimeoutError(), 500, OSError(), 500) == [
        True, True, True, True, False]


async def test_status_in_neither_list_is_ignored():
    script = Script()
    c = HealthChecker("a", CHECK, script)
    assert await drive(c, script, 500, 500, 201, 418, 500) == [True, True, True, True, False]
    assert await drive(c, script, 200, 401, 200) == [False, False, True]


async def test_slow_probe_is_a_timeout(caplog):
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    script = Script()
    c = HealthChecker("slow", active(timeout=0.02, unhealthy={"timeouts": 2}), script)
    assert await drive(c, script, 1.0, httpx.ReadTimeout("read")) == [True, False]
    assert "'slow' is now unhealthy (timeout, 2 in a row)" in caplog.text


async def test_connection_errors_are_tcp_failures(caplog):
    caplog.set_level(logging.WARNING, "aiproxy_middleware")
    script = Script()
    c = HealthChecker("gone", CHECK, script)
    assert await drive(c, script, ConnectionRefusedError(), httpx.ConnectError("no")) == [
        True, False]
    assert "'gone' is now unhealthy (connection failed, 2 in a row)" in caplog.text


async def test_unexpected_probe_error_is_a_tcp_failure_and_its_message_is_not_logged(caplog):
    caplog.set_level(logging.DEBUG)
    script = Script()
    c = HealthChecker("odd", CHECK, script)
    boom = ValueError("https://api.test/health?key=sk-secret")
    assert await drive(c, script, boom, boom) == [True, False]
    assert "'odd' is now unhealthy (probe error ValueError, 2 in a row)" in caplog.text
    assert "sk-secret" not in caplog.text


async def wait_for(predicate: Any, limit: float = 2.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_run_flips_unhealthy_then_healthy_with_the_state_s_interval():
    script = Script(500)
    check = active(healthy={"interval": 1, "successes": 2},
                   unhealthy={"interval": 3, "http_failures": 2})
    c = HealthChecker("a", check, script, interval_scale=0.002)
    task = asyncio.create_task(c.run())
    try:
        await wait_for(lambda: not c.healthy)
        calls, started = script.calls, asyncio.get_running_loop().time()
        script.steps = [200]
        await wait_for(lambda: c.healthy)
        # Two successes, each after an unhealthy interval (3 × 0.002 s).
        assert script.calls - calls <= 3
        assert asyncio.get_running_loop().time() - started >= 0.006
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_run_survives_any_probe_error():
    script = Script(RuntimeError("x"), KeyError("y"), ZeroDivisionError(), 200)
    c = HealthChecker("a", CHECK, script, interval_scale=0.001)
    task = asyncio.create_task(c.run())
    try:
        await wait_for(lambda: script.calls >= 6)
        assert not task.done()
        assert c.healthy  # 2 tcp failures made it unhealthy, 2 successes brought it back
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_monitor_start_stop_leaves_no_tasks():
    scripts = [Script(200), Script(OSError())]
    checkers = [HealthChecker(f"c{n}", CHECK, s, interval_scale=0.001)
                for n, s in enumerate(scripts)]
    monitor = HealthMonitor(checkers)
    before = asyncio.all_tasks()
    monitor.start()
    monitor.start()  # idempotent: still one task per checker
    assert monitor.running and len(asyncio.all_tasks() - before) == 2
    await wait_for(lambda: all(s.calls >= 3 for s in scripts))
    assert not checkers[1].healthy
    await monitor.stop()
    await monitor.stop()
    assert not monitor.running
    assert asyncio.all_tasks() - before == set()
    calls = [s.calls for s in scripts]
    await asyncio.sleep(0.01)
    assert [s.calls for s in scripts] == calls


class Recorder:
    """An ASGI app recording each request and answering `status`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_request(receive)
        self.requests.append({"method": scope["method"], "path": scope["path"],
                              "query": scope["query_string"].decode(), "body": body,
                              "headers": [(k.decode(), v.decode()) for k, v in scope["headers"]]})
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def shared() -> Any:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


async def test_http_probe_sends_the_check_request_with_the_instance_auth(shared):
    app = Recorder()
    async with Served(app) as server:
        check = active(http_method="POST", http_path="/health?deep=1",
                       http_req_body='{"ping":true}',
                       req_headers=["X-Probe: yes", "Content-Type: application/json", "bad"])
        probe = http_probe(check, f"{server.url}/v1", {"Authorization": "Bearer sk-1"},
                           {"key": "sk 2", "v": "a&b"}, lambda: shared)
        assert await probe() == 200
        app.status = 503
        assert await probe() == 503
    req = app.requests[0]
    assert req["method"] == "POST" and req["path"] == "/health"
    assert req["query"] == "deep=1&key=sk+2&v=a%26b"
    headers = dict(req["headers"])
    assert headers["x-probe"] == "yes" and headers["authorization"] == "Bearer sk-1"
    assert headers["content-type"] == "application/json"
    assert req["body"] == b'{"ping":true}'
    assert not shared.is_closed  # borrowed, not closed


async def test_http_probe_default_get_and_host_port_override(shared):
    app = Recorder()
    async with Served(app) as server:
        # The base URL names another host and port: the check's own win.
        check = active(host="127.0.0.1", port=server.port, http_path="/ping")
        probe = http_probe(check, "http://instance.invalid:9/v1", {}, {"k": "v"},
                           lambda: shared)
        assert await probe() == 200
    req = app.requests[0]
    assert (req["method"], req["path"], req["query"], req["body"]) == ("GET", "/ping", "k=v",
                                                                      b"")
    assert dict(req["headers"])["host"] == f"127.0.0.1:{server.port}"


async def test_http_probe_through_a_checker_against_a_closed_port(shared):
    probe = http_probe(active(), f"http://127.0.0.1:{free_port()}", {}, {}, lambda: shared)
    c = HealthChecker("down", active(unhealthy={"tcp_failures": 1}), probe)
    await c.probe_once()
    assert not c.healthy


async def test_tcp_probe_open_and_closed_port():
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    never = lambda: pytest.fail("tcp probes need no HTTP client")  # noqa: E731
    try:
        assert await http_probe(active(type="tcp"), f"http://127.0.0.1:{port}", {}, {},
                                never)() == 200
        probe = http_probe(active(type="tcp", port=port), "https://127.0.0.1", {}, {}, never)
        assert await probe() == 200
    finally:
        server.close()
        await server.wait_closed()
    closed = http_probe(active(type="tcp"), f"http://127.0.0.1:{free_port()}", {}, {}, never)
    with pytest.raises(OSError):
        await closed()
    c = HealthChecker("t", active(type="tcp", unhealthy={"tcp_failures": 1}), closed)
    await c.probe_once()
    assert not c.healthy


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    key_file, cert_file = folder / "key.pem", folder / "cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    yield key_file, cert_file


async def test_https_probe_verifies_the_certificate_unless_told_not_to(self_signed, shared):
    key_file, cert_file = self_signed
    served = Served(Recorder())
    served.server = uvicorn.Server(uvicorn.Config(
        served.server.config.app, host="127.0.0.1", port=served.port, log_level="warning",
        lifespan="off", ssl_keyfile=str(key_file), ssl_certfile=str(cert_file)))
    async with served:
        base = f"https://127.0.0.1:{served.port}"
        verified = http_probe(active(type="https"), base, {}, {}, lambda: shared)
        with pytest.raises(httpx.ConnectError) as caught:
            await verified()
        assert isinstance(caught.value.__context__, ssl.SSLCertVerificationError) or \
            "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        unverified = http_probe(active(type="https", https_verify_certificate=False), base,
                                {}, {}, lambda: pytest.fail("needs a client of its own"))
        assert await unverified() == 200
