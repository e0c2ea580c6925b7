"""The client snippets of `examples/clients.py` (and the README's "Calling it from clients"),
each run as a user runs it: the real SDK against `aiproxy serve examples/quickstart.yaml` in a
subprocess on 127.0.0.1. The mock echoes the prompt, so what the snippet prints is known."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from test_serve_limits import Serve

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `examples` is imported from the repository root
    sys.path.insert(0, str(ROOT))

from examples import clients  # noqa: E402

PRINTS = {
    "openai_chat": ["Hello from openai!"],
    "openai_stream": ["Streamed from openai!"],
    "openai_responses": ["Hello from responses!", "And a follow-up turn!"],
    "anthropic_messages": ["Hello from anthropic!"],
    "anthropic_stream": ["Streamed from anthropic!"],
    "langchain_openai": ["Hello from LangChain!", "Streamed from LangChain!"],
    "langchain_anthropic": ["Hello from ChatAnthropic!", "Streamed from ChatAnthropic!"],
}
"""What each snippet shows its user, line by line: the mock's echo of each prompt."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The README's quickstart: `aiproxy serve examples/quickstart.yaml`."""
    log = tmp_path_factory.mktemp("clients") / "serve.log"
    server = Serve(ROOT / "examples/quickstart.yaml", log=log)
    yield server.url
    server.stop()


@pytest.fixture(autouse=True)
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    # LangChain sends traces to LangSmith when these are set; no test reaches the internet.
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING"):
        monkeypatch.delenv(name, raising=False)


class Printed:
    """Records the snippet's `print` calls: what reaches the user's terminal, piece by piece."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, *args: Any, sep: str = " ", end: str = "\n", **_: Any) -> None:
        self.calls.append((sep.join(str(a) for a in args), end))

    @property
    def lines(self) -> list[str]:
        return "".join(text + end for text, end in self.calls).splitlines()

    @property
    def pieces(self) -> int:
        """How many non-empty pieces were printed without a line break (a stream's deltas)."""
        return sum(1 for text, end in self.calls if text and end == "")


def run(snippet: Callable[[str], None], url: str, monkeypatch: pytest.MonkeyPatch) -> Printed:
    printed = Printed()
    monkeypatch.setattr(clients, "print", printed, raising=False)
    snippet(url)
    return printed


def test_every_snippet_is_checked() -> None:
    assert [s.__name__ for s in clients.SNIPPETS] == list(PRINTS)


@pytest.mark.parametrize("name", [n for n in PRINTS if "stream" not in n])
def test_snippet_prints_the_answer(gateway: str, name: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run(getattr(clients, name), gateway, monkeypatch)
    assert printed.lines == PRINTS[name]


@pytest.mark.parametrize("name", ["openai_stream", "anthropic_stream"])
def test_stream_snippet_prints_the_answer_as_it_arrives(
        gateway: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run(getattr(clients, name), gateway, monkeypatch)
    assert printed.lines == PRINTS[name]
    # The mock streams word by word: each word reached the terminal as its own piece.
    assert printed.pieces == len(PRINTS[name][0].split())


@pytest.mark.parametrize("name", ["langchain_openai", "langchain_anthropic"])
def test_langchain_snippet_invokes_and_streams(gateway: str, name: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    printed = run(getattr(clients, name), gateway, monkeypatch)
    assert printed.lines == PRINTS[name]
    assert printed.pieces == len(PRINTS[name][1].split())


def test_the_script_runs_every_snippet(gateway: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`python examples/clients.py BASE_URL`, as the module's docstring says."""
    monkeypatch.setattr(sys, "argv", ["examples/clients.py", gateway])
    source = Path(clients.__file__).read_text()
    exec(compile(source, clients.__file__, "exec"), {"__name__": "__main__"})
    expected = []
    for name, lines in PRINTS.items():
        expected += [f"# {name}", *lines]
    assert capsys.readouterr().out.splitlines() == expected


def _body(snippet: Callable[..., None]) -> str:
    """A snippet function's body, dedented: what the README shows."""
    source = textwrap.dedent(inspect.getsource(snippet))
    function = ast.parse(source).body[0]
    lines = source.splitlines()[function.body[0].lineno - 1:function.end_lineno]
    return textwrap.dedent("\n".join(lines)) + "\n"


def _readme_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Calling it from clients\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_shows_the_snippets_as_they_are_in_examples() -> None:
    blocks = _readme_blocks()
    assert blocks[0] == (f'base_url = "{clients.BASE_URL}"'
                         "  # aiproxy serve examples/quickstart.yaml\n")
    assert blocks[1:] == [_body(s) for s in clients.SNIPPETS]
