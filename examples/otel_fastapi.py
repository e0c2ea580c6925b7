"""A FastAPI app whose AI requests are traced with OpenTelemetry and exported to an OTLP
collector (Jaeger, Tempo, Honeycomb, Datadog, Langfuse, Phoenix, an OpenTelemetry Collector).

Run from the repository root (`quickstart.yaml` uses the mock provider: no API key needed):

    pip install 'aiproxy-middleware[otel]' opentelemetry-sdk opentelemetry-exporter-otlp-proto-http
    docker run --rm -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one   # a collector+UI
    uvicorn examples.otel_fastapi:app

    curl localhost:8000/v1/chat/completions -H 'content-type: application/json' \
        -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
        -d '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}'

Then open http://localhost:16686: the trace 4bf92f35... has a `chat mock-echo-1` span with
its `gen_ai.*` attributes and one `attempt` child. The exporter sends to
`OTEL_EXPORTER_OTLP_ENDPOINT` (default http://localhost:4318). `AIPROXY_OTEL_EXPORTER=console`
prints the spans instead; `memory` keeps them in `memory_exporter` (what the tests read).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (BatchSpanProcessor, ConsoleSpanExporter,
                                            SimpleSpanProcessor)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiproxy_middleware import AIProxyMiddleware

EXPORTER = os.environ.get("AIPROXY_OTEL_EXPORTER", "otlp")
resource = Resource.create({"service.name": "items-with-ai"})
tracer_provider = TracerProvider(resource=resource)
memory_exporter = InMemorySpanExporter()
metric_reader: Any

if EXPORTER == "otlp":
    # The OTLP exporters are this example's, not the middleware's, dependencies.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    metric_reader = PeriodicExportingMetricReader(OTLPMetricExporter())
elif EXPORTER == "console":
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    metric_reader = InMemoryMetricReader()
else:  # "memory"
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory_exporter))
    metric_reader = InMemoryMetricReader()
meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader])

app = FastAPI(title="Items")


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int | str]:
    return {"item_id": item_id, "name": f"item {item_id}"}


# One span per AI request (its attempts as children), continuing the caller's `traceparent`;
# the GenAI metrics (token usage, operation duration) beside them. Prompts and answers are
# not recorded unless the config says `tracing: {captureContent: true}`.
app.add_middleware(AIProxyMiddleware, config=str(Path(__file__).with_name("quickstart.yaml")),
                   tracer_provider=tracer_provider, meter_provider=meter_provider)
