"""The `aiproxy` command, run the way the README runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from aiproxy_middleware.serve.cli import main
from upstream_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_check_accepts_the_quickstart_and_rejects_a_bad_config(tmp_path, capsys):
    assert main(["check", str(ROOT / "examples/quickstart.yaml")]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider:\n  type: openai\n  apiTokns: [x]\n")
    assert main(["check", str(bad)]) == 2
    assert "provider.apiTokns: unknown field" in capsys.readouterr().err


def test_serve_quickstart_answers_with_no_key_and_no_network():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiproxy_middleware.serve.cli", "serve", "examples/quickstart.yaml",
         "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                r = httpx.post(f"{url}/v1/chat/completions", json={
                    "model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]})
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == "Hello!"
        assert r.json()["model"] == "mock-echo-1"
        assert httpx.get(f"{url}/elsewhere").status_code == 404
    finally:
        proc.terminate()
        proc.wait(10)


def test_check_accepts_the_apisix_example(monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-example")
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-example")
    assert main(["check", str(ROOT / "examples/apisix.yaml")]) == 0
    assert "sk-example" not in capsys.readouterr().out
