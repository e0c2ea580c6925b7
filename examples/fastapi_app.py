"""A FastAPI app that also serves OpenAI's chat and embeddings APIs.

Run from the repository root (no API key, no network: `quickstart.yaml` uses the mock provider):

    uvicorn examples.fastapi_app:app

    curl localhost:8000/items/1
    curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'

Single-provider form: any path ending in `/v1/chat/completions` or `/v1/embeddings` goes to
the gateway; everything else, FastAPI's own docs included, stays FastAPI's.
"""

from pathlib import Path

from fastapi import FastAPI

from aiproxy_middleware import AIProxyMiddleware

app = FastAPI(title="Items")


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int | str]:
    return {"item_id": item_id, "name": f"item {item_id}"}


# The YAML may read secrets from the environment, e.g. `apiTokens: ["${OPENAI_API_KEY}"]`.
app.add_middleware(AIProxyMiddleware, config=str(Path(__file__).with_name("quickstart.yaml")))
