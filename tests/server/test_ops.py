"""Operations endpoints (/healthz, /readyz, /metrics), the edge layer and the turn log,
over real HTTP against ``web_server`` (tests/live_server.py)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import LiveServer


def widget_turn(server: LiveServer, text: str = "hi") -> tuple[str, list[tuple[str, Any]]]:
    """One widget turn (PROTOCOL.md): the session token and the events up to ``done``."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        created = http.post("/widget/api/sessions", json={})
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['token']}"}
        posted = http.post("/widget/api/messages", headers=auth,
                           json={"text": text, "client_message_id": "m1"})
        assert posted.status_code == 202, posted.text
        turn_id = posted.json()["turn_id"]
        events: list[tuple[str, Any]] = []
        with http.stream("GET", f"/widget/api/turns/{turn_id}/events", headers=auth) as stream:
            assert stream.status_code == 200
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((event, json.loads(line.removeprefix("data: "))))
            # The server ends the stream after the last event (read to the end, so the
            # stream's bookkeeping is finished when this returns).
    return created.json()["token"], events


def scrape(server: LiveServer) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """``/metrics`` parsed: family name -> {(sample name, sorted labels): value}."""
    response = httpx.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
    return families


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    return families[family][(name, tuple(sorted(labels.items())))]


# -- health and readiness --------------------------------------------------------------


def test_healthz(web_server: LiveServer) -> None:
    response = httpx.get(web_server.url + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_model_and_database(web_server: LiveServer) -> None:
    response = httpx.get(web_server.url + "/readyz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ready",
                               "checks": {"model": "ok", "database": "ok"}}


def test_readyz_is_503_while_the_database_is_unreachable(web_server: LiveServer) -> None:
    # Move the SQLite file's folder away: the probe cannot open the database file, as
    # when a volume is unmounted. (Disposing the engine is not enough: SQLite reconnects.)
    database = Path(web_server.db_url.removeprefix("sqlite:///"))
    folder = database.parent
    moved = folder.with_name(folder.name + "-gone")
    os.rename(folder, moved)
    try:
        response = httpx.get(web_server.url + "/readyz", timeout=10)
    finally:
        os.rename(moved, folder)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["model"] == "ok"
    assert body["checks"]["database"].startswith("unreachable")
    # Liveness does not depend on the database, and readiness comes back with it.
    assert httpx.get(web_server.url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(web_server.url + "/readyz", timeout=10).status_code == 200


def test_readyz_is_503_when_the_model_is_closed(web_server: LiveServer) -> None:
    web_server.generator.closed = True
    response = httpx.get(web_server.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["checks"] == {"model": "closed", "database": "ok"}


# -- metrics ---------------------------------------------------------------------------


def test_metrics_count_requests_latencies_tokens_and_replies(web_server: LiveServer) -> None:
    generator = web_server.generator
    widget_reply = "Hello from the widget."
    api_reply = "Hello from the API, friend."
    generator.replies.extend([widget_reply, api_reply])

    _, events = widget_turn(web_server)
    assert events[-1][0] == "done"
    assert events[-1][1]["text"] == widget_reply
    client = openai.OpenAI(base_url=web_server.url + "/v1", api_key="x", max_retries=0)
    result = client.chat.completions.create(model="pine", messages=[
        {"role": "user", "content": "hello"},
    ])
    assert result.choices[0].message.content == api_reply
    assert httpx.get(web_server.url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(web_server.url + "/nowhere", timeout=10).status_code == 404

    m = scrape(web_server)

    requests = "botkit_requests"
    assert sample(m, requests, "botkit_requests_total", channel="web", status="201") == 1
    assert sample(m, requests, "botkit_requests_total", channel="web", status="202") == 1
    assert sample(m, requests, "botkit_requests_total", channel="web", status="200") == 1
    assert sample(m, requests, "botkit_requests_total", channel="openai", status="200") == 1
    assert sample(m, requests, "botkit_requests_total", channel="ops", status="200") >= 1
    assert sample(m, requests, "botkit_requests_total", channel="other", status="404") == 1

    ttft = "botkit_time_to_first_token_seconds"
    reply_time = "botkit_reply_seconds"
    for channel in ("web", "openai"):
        assert sample(m, ttft, ttft + "_count", channel=channel) >= 1
        assert sample(m, ttft, ttft + "_bucket", channel=channel, le="+Inf") >= 1
        assert sample(m, reply_time, reply_time + "_count", channel=channel) == 1
        assert sample(m, "botkit_replies", "botkit_replies_total",
                      channel=channel, outcome="ok") == 1
    assert sample(m, "botkit_tokens_generated", "botkit_tokens_generated_total",
                  channel="web") == generator.count_text(widget_reply)
    assert sample(m, "botkit_tokens_generated", "botkit_tokens_generated_total",
                  channel="openai") == generator.count_text(api_reply)
    assert sample(m, "botkit_active_streams", "botkit_active_streams", channel="web") == 0
    assert sample(m, "botkit_queue_depth", "botkit_queue_depth") == 0
    assert "botkit_errors" in m
    assert not any(value for value in m["botkit_errors"].values())


def test_metrics_count_a_busy_model(web_server: LiveServer) -> None:
    from botkit.errors import GeneratorBusy

    def busy(request: object) -> str:
        raise GeneratorBusy("full")

    web_server.generator.replies.append(busy)
    client = openai.OpenAI(base_url=web_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="pine", messages=[
            {"role": "user", "content": "hello"},
        ])
    m = scrape(web_server)
    assert sample(m, "botkit_requests", "botkit_requests_total",
                  channel="openai", status="503") == 1
    assert sample(m, "botkit_replies", "botkit_replies_total",
                  channel="openai", outcome="busy") == 1
    assert sample(m, "botkit_errors", "botkit_errors_total", channel="openai", kind="busy") == 1


# -- the edge: origins, CORS, body size ------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/models"),
    ("POST", "/widget/api/sessions"),
    ("POST", "/v1/chat/completions"),
])
def test_a_foreign_origin_is_forbidden(web_server: LiveServer, method: str, path: str) -> None:
    response = httpx.request(method, web_server.url + path, json={}, timeout=10,
                             headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    assert "access-control-allow-origin" not in response.headers
    assert web_server.generator.requests == []


def test_a_foreign_preflight_is_forbidden(web_server: LiveServer) -> None:
    response = httpx.options(web_server.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
    })
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_same_origin_is_allowed_and_echoed(web_server: LiveServer) -> None:
    response = httpx.get(web_server.url + "/v1/models", timeout=10,
                         headers={"Origin": web_server.url})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == web_server.url
    assert "Origin" in response.headers["vary"]
    created = httpx.post(web_server.url + "/widget/api/sessions", json={}, timeout=10,
                         headers={"Origin": web_server.url})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == web_server.url


def test_an_allowed_origin_gets_a_cors_preflight(
    make_web_server: Callable[..., LiveServer],
) -> None:
    shop = "https://shop.example"
    server = make_web_server(server_settings={"allowed_origins": (shop,)})
    response = httpx.options(server.url + "/widget/api/messages", timeout=10, headers={
        "Origin": shop,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == shop
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert {"POST", "GET"} <= methods
    allowed = {h.strip().lower()
               for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed

    created = httpx.post(server.url + "/widget/api/sessions", json={}, timeout=10,
                         headers={"Origin": shop})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == shop
    # Other origins are still refused.
    refused = httpx.post(server.url + "/widget/api/sessions", json={}, timeout=10,
                         headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403


@pytest.mark.parametrize("path", ["/widget.js", "/widget/widget.css"])
def test_widget_assets_are_served_to_any_origin(web_server: LiveServer, path: str) -> None:
    response = httpx.get(web_server.url + path, timeout=10,
                         headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
    assert response.content
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("path", ["/widget/api/sessions", "/v1/chat/completions"])
def test_an_oversize_body_is_413_json(web_server: LiveServer, path: str) -> None:
    body = b'{"text": "' + b"x" * 70_000 + b'"}'
    response = httpx.post(web_server.url + path, content=body, timeout=10,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "body_too_large"
    assert "65,536" in error["message"]


def test_security_headers_are_added(web_server: LiveServer) -> None:
    response = httpx.get(web_server.url + "/healthz", timeout=10)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


# -- the structured turn log -----------------------------------------------------------


def _turn_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "botkit.turns"]


def test_a_widget_turn_logs_one_line_without_the_text(
    web_server: LiveServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="botkit.turns")
    web_server.generator.replies.append("Classified answer here.")

    _, events = widget_turn(web_server, "my secret question")

    assert events[-1][0] == "done"
    lines = _turn_lines(caplog)
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "turn"
    assert line["status"] == "ok"
    assert line["channel"] == "web"
    assert isinstance(line["conversation_id"], int)
    assert line["persona"] == "pine"
    assert line["prompt_tokens"] > 0
    assert line["reply_tokens"] == web_server.generator.count_text("Classified answer here.")
    assert line["ttft_ms"] >= 0
    assert line["reply_ms"] >= line["ttft_ms"]
    record_text = " ".join(r.getMessage() for r in caplog.records if r.name == "botkit.turns")
    assert "secret" not in record_text
    assert "Classified" not in record_text


def test_at_debug_the_turn_log_has_the_text(
    web_server: LiveServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="botkit.turns")
    web_server.generator.replies.append("Classified answer here.")

    widget_turn(web_server, "my secret question")

    lines = _turn_lines(caplog)
    assert len(lines) == 1
    assert lines[0]["user_text"] == "my secret question"
    assert lines[0]["reply_text"] == "Classified answer here."


def test_an_api_completion_logs_one_line_without_the_text(
    web_server: LiveServer, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="botkit.turns")
    web_server.generator.replies.append("Classified answer here.")
    client = openai.OpenAI(base_url=web_server.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="pine", messages=[
        {"role": "user", "content": "my secret question"},
    ])

    lines = _turn_lines(caplog)
    assert len(lines) == 1
    assert lines[0]["channel"] == "openai"
    assert lines[0]["status"] == "ok"
    assert lines[0]["conversation_id"] is None
    assert lines[0]["reply_tokens"] == web_server.generator.count_text("Classified answer here.")
    assert "secret" not in caplog.text
    assert "Classified" not in caplog.text
