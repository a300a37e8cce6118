import os

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app import create_app


@pytest.fixture
def client():
    return create_app(CollectorRegistry()).test_client()


def samples(client):
    text = client.get("/metrics").get_data(as_text=True)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_items(client):
    assert client.get("/api/items").get_json()["items"][0] == {"id": 1, "name": "anvil"}
    assert client.get("/api/items/2").get_json() == {"id": 2, "name": "rope"}
    assert client.get("/api/items/9").status_code == 404


def test_metrics_count_requests_by_route_template(client):
    client.get("/health")
    client.get("/api/items/2")
    client.get("/api/items/3")
    client.get("/api/items/9")
    client.get("/no/such/page")
    seen = samples(client)

    def count(endpoint, status, method="GET"):
        key = (("endpoint", endpoint), ("method", method), ("status", status))
        return seen.get(("http_requests_total", key))

    assert count("/health", "200") == 1
    assert count("/api/items/<int:item_id>", "200") == 2
    assert count("/api/items/<int:item_id>", "404") == 1
    assert count("unmatched", "404") == 1
    assert not any("/no/such/page" in str(key) for key in seen), "raw paths never become labels"
    duration_count = seen[("http_request_duration_seconds_count", (("endpoint", "/api/items/<int:item_id>"), ("method", "GET")))]
    assert duration_count == 3


def test_metrics_content_type(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    assert "# TYPE http_request_duration_seconds histogram" in response.get_data(as_text=True)


def test_crash_flag(monkeypatch):
    monkeypatch.setenv("CRASH_ON_START", "1")
    with pytest.raises(SystemExit):
        create_app(CollectorRegistry())
    monkeypatch.delenv("CRASH_ON_START")
    assert create_app(CollectorRegistry()) is not None
