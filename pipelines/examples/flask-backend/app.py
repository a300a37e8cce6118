"""A small Flask backend: the application the example pipeline tests, builds and deploys.

- GET /health: liveness and readiness.
- GET /metrics: Prometheus metrics, `http_requests_total{method,endpoint,status}` and
  `http_request_duration_seconds{method,endpoint}`. The endpoint label is Flask's URL rule
  (`/api/items/<int:item_id>`), never the raw path, so its values stay few.
- GET /api/items, GET /api/items/<id>: something to call.

CRASH_ON_START=1 makes the process exit at once, so a Deployment of it crash-loops: the demo of
Gantry's automatic rollback (Dockerfile.crash sets it).
"""

import os
import sys
import time

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

ITEMS = {1: "anvil", 2: "rope", 3: "rocket skates"}


def create_app(registry=None):
    if os.environ.get("CRASH_ON_START") == "1":
        raise SystemExit("CRASH_ON_START=1: exiting at start (the rollback demo)")
    registry = registry if registry is not None else CollectorRegistry()
    requests_total = Counter(
        "http_requests_total",
        "HTTP requests answered.",
        ["method", "endpoint", "status"],
        registry=registry,
    )
    duration = Histogram(
        "http_request_duration_seconds",
        "Time spent answering HTTP requests.",
        ["method", "endpoint"],
        registry=registry,
    )
    app = Flask(__name__)

    @app.before_request
    def start_timer():
        g.started = time.perf_counter()

    @app.after_request
    def record(response):
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        requests_total.labels(request.method, endpoint, str(response.status_code)).inc()
        duration.labels(request.method, endpoint).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/api/items")
    def items():
        return jsonify(items=[{"id": k, "name": v} for k, v in ITEMS.items()])

    @app.get("/api/items/<int:item_id>")
    def item(item_id):
        if item_id not in ITEMS:
            return jsonify(error=f"no item {item_id}"), 404
        return jsonify(id=item_id, name=ITEMS[item_id])

    return app


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"flask-backend listening on :{port}", file=sys.stderr, flush=True)
    # Werkzeug's server, threaded: enough for a demo, and the image has nothing else.
    create_app().run(host="0.0.0.0", port=port, threaded=True)
