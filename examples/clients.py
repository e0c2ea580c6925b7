"""Calling the gateway from the clients people use: the openai (chat and Responses) and
anthropic SDKs, LangChain.

Start the quickstart gateway (the mock provider: no key, no network; it echoes the last user
message back), then run every snippet against it:

    aiproxy serve examples/quickstart.yaml
    python examples/clients.py [BASE_URL]      # default http://127.0.0.1:8000

Each function is one snippet; the README's "Calling it from clients" shows their bodies, and
tests/test_client_snippets.py runs each against `aiproxy serve` and checks both stay equal.
The API key is any string: the gateway holds the providers' keys. Point at a route's prefix
(`.../ai`) when the gateway is mounted under one.
"""

from __future__ import annotations

import sys

BASE_URL = "http://127.0.0.1:8000"


def openai_chat(base_url: str = BASE_URL) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello from openai!"}])
    print(reply.choices[0].message.content)


def openai_stream(base_url: str = BASE_URL) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Streamed from openai!"}],
        stream=True)
    for chunk in stream:
        print(chunk.choices[0].delta.content or "", end="")
    print()


def openai_responses(base_url: str = BASE_URL) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    first = client.responses.create(model="gpt-4o", input="Hello from responses!")
    print(first.output_text)
    again = client.responses.create(model="gpt-4o", input="And a follow-up turn!",
                                    previous_response_id=first.id)
    print(again.output_text)


def anthropic_messages(base_url: str = BASE_URL) -> None:
    from anthropic import Anthropic

    client = Anthropic(base_url=base_url, api_key="unused")  # the SDK adds /v1/messages
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=1024,
        messages=[{"role": "user", "content": "Hello from anthropic!"}])
    print(message.content[0].text)


def anthropic_stream(base_url: str = BASE_URL) -> None:
    from anthropic import Anthropic

    client = Anthropic(base_url=base_url, api_key="unused")
    with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=1024,
            messages=[{"role": "user", "content": "Streamed from anthropic!"}]) as stream:
        for text in stream.text_stream:
            print(text, end="")
    print()


def langchain_openai(base_url: str = BASE_URL) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="gpt-4o", base_url=f"{base_url}/v1", api_key="unused")
    print(llm.invoke("Hello from LangChain!").content)
    for chunk in llm.stream("Streamed from LangChain!"):
        print(chunk.content, end="")
    print()


def langchain_anthropic(base_url: str = BASE_URL) -> None:
    from langchain_anthropic import ChatAnthropic

    llm = ChatAnthropic(model="claude-sonnet-4-5", base_url=base_url, api_key="unused")
    print(llm.invoke("Hello from ChatAnthropic!").content)
    for chunk in llm.stream("Streamed from ChatAnthropic!"):
        print(chunk.content, end="")
    print()


SNIPPETS = (openai_chat, openai_stream, openai_responses, anthropic_messages, anthropic_stream,
            langchain_openai, langchain_anthropic)


if __name__ == "__main__":
    base_url = sys.argv[1] if len(sys.argv) > 1 else BASE_URL
    for snippet in SNIPPETS:
        print(f"# {snippet.__name__}")
        try:
            snippet(base_url)
        except ImportError as exc:  # a client library that is not installed
            print(f"(skipped: {exc.name} is not installed)")
