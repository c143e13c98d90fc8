"""The widget's HTTP API against a real uvicorn on loopback (adapters/web/PROTOCOL.md)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer


def _session(client: httpx.Client, **body: Any) -> dict[str, str]:
    response = client.post("/widget/api/sessions", json=body)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def _events(lines: Iterator[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Parse an event stream into ``(id, event, data)``; comments and retry are skipped."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                yield int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


def _stream(
    client: httpx.Client, turn_id: str, headers: dict[str, str], *, last_id: int | None = None,
    stop_after: int | None = None,
) -> list[tuple[int, str, dict[str, Any]]]:
    if last_id is not None:
        headers = {**headers, "Last-Event-ID": str(last_id)}
    seen: list[tuple[int, str, dict[str, Any]]] = []
    with client.stream("GET", f"/widget/api/turns/{turn_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for event in _events(r.iter_lines()):
            seen.append(event)
            if event[1] in ("done", "error") or len(seen) == stop_after:
                break
    return seen


def _send(client: httpx.Client, headers: dict[str, str], text: str, client_id: str) -> str:
    response = client.post(
        "/widget/api/messages", json={"text": text, "client_message_id": client_id},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["turn_id"])


@pytest.fixture
def client(web_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, timeout=10) as client:
        yield client


def test_a_reply_streams_as_events_and_is_stored(
    web_server: LiveServer, client: httpx.Client
) -> None:
    web_server.generator.replies.append("Parcels ship in two days.")
    headers = _session(client)

    events = _stream(client, _send(client, headers, "When do parcels ship?", "m1"), headers)

    assert [e[0] for e in events] == list(range(1, len(events) + 1))
    assert [e[1] for e in events] == ["delta"] * (len(events) - 1) + ["done"]
    assert "".join(e[2]["text"] for e in events[:-1]) == "Parcels ship in two days."
    done = events[-1][2]
    assert done["text"] == "Parcels ship in two days."
    conversation = client.get("/widget/api/conversation", headers=headers).json()
    assert [(m["role"], m["text"]) for m in conversation["messages"]] == [
        ("user", "When do parcels ship?"), ("assistant", "Parcels ship in two days."),
    ]
    assert conversation["messages"][1]["id"] == done["message_id"]
    assert conversation["pending"] is None
    assert conversation["persona"]["greeting"] == "Hi! I'm Pine. How can I help?"


def test_a_reconnect_with_last_event_id_resumes_without_gap_or_duplicate(
    web_server: LiveServer, client: httpx.Client
) -> None:
    reply = "one two three four five six seven eight"
    web_server.generator.replies.append(reply)
    web_server.generator.delay_s = 0.05
    headers = _session(client)
    turn_id = _send(client, headers, "count", "m1")

    first = _stream(client, turn_id, headers, stop_after=3)  # the connection drops here
    rest = _stream(client, turn_id, headers, last_id=first[-1][0])

    ids = [e[0] for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert "".join(e[2]["text"] for e in (first + rest)[:-1]) == reply
    assert rest[-1][1] == "done"


def test_a_reload_mid_reply_finds_the_pending_turn(
    web_server: LiveServer, client: httpx.Client
) -> None:
    web_server.generator.replies.append("slow words arrive one by one here")
    web_server.generator.delay_s = 0.1
    headers = _session(client)
    turn_id = _send(client, headers, "hello", "m1")

    pending = client.get("/widget/api/conversation", headers=headers).json()["pending"]

    assert pending == {"turn_id": turn_id}
    events = _stream(client, turn_id, headers)
    assert events[-1][2]["text"] == "slow words arrive one by one here"


def test_a_retried_post_with_the_same_client_message_id_is_answered_once(
    web_server: LiveServer, client: httpx.Client
) -> None:
    headers = _session(client)
    first = _send(client, headers, "hi", "same-id")
    again = _send(client, headers, "hi", "same-id")

    assert again == first
    _stream(client, first, headers)
    assert [role for role, _ in web_server.messages()] == ["user", "assistant"]


def test_feedback_is_stored_once_per_user_and_only_for_own_bot_replies(
    web_server: LiveServer, client: httpx.Client
) -> None:
    headers = _session(client)
    done = _stream(client, _send(client, headers, "hi", "m1"), headers)[-1][2]
    reply_id = done["message_id"]

    assert client.post("/widget/api/feedback", json={"message_id": reply_id, "score": 1},
                       headers=headers).json() == {"message_id": reply_id, "score": 1}
    client.post("/widget/api/feedback", json={"message_id": reply_id, "score": -1},
                headers=headers)

    assert web_server.feedback() == [(reply_id, -1)]
    messages = client.get("/widget/api/conversation", headers=headers).json()["messages"]
    assert messages[1]["feedback"] == -1
    user_message_id = messages[0]["id"]
    assert client.post("/widget/api/feedback", json={"message_id": user_message_id, "score": 1},
                       headers=headers).status_code == 404
    other = _session(client)
    answer = client.post("/widget/api/feedback", json={"message_id": reply_id, "score": 1},
                         headers=other)
    assert answer.status_code == 404
    assert web_server.feedback() == [(reply_id, -1)]
    bad = client.post("/widget/api/feedback", json={"message_id": reply_id, "score": 5},
                      headers=headers)
    assert bad.status_code == 400


def test_reset_starts_a_new_conversation(web_server: LiveServer, client: httpx.Client) -> None:
    headers = _session(client)
    _stream(client, _send(client, headers, "hi", "m1"), headers)

    reset = client.post("/widget/api/reset", json={}, headers=headers)

    assert reset.status_code == 200
    assert reset.json()["messages"] == []
    assert client.get("/widget/api/conversation", headers=headers).json()["messages"] == []
    assert len(web_server.messages()) == 2  # the old conversation is kept, not deleted


# --- sessions -------------------------------------------------------------------------


def test_another_sessions_token_cannot_read_or_follow_its_conversation(
    web_server: LiveServer, client: httpx.Client
) -> None:
    web_server.generator.replies.append("my order is 1234")
    alice = _session(client)
    turn_id = _send(client, alice, "secret order details", "m1")
    _stream(client, turn_id, alice)
    mallory = _session(client)

    conversation = client.get("/widget/api/conversation", headers=mallory).json()
    follow = client.get(f"/widget/api/turns/{turn_id}/events", headers=mallory)

    assert conversation["messages"] == []
    assert follow.status_code == 404
    assert "secret" not in follow.text


@pytest.mark.parametrize("token", [
    "garbage", "v1.pine.AAAA.BBBB", "v2.pine.x.y",
    # a well-formed token for another persona with a copied signature
    None,
])
def test_a_forged_token_gets_401(
    web_server: LiveServer, client: httpx.Client, token: str | None
) -> None:
    if token is None:
        real = _session(client)["Authorization"].removeprefix("Bearer ")
        _, persona, nonce, mac = real.split(".")
        token = f"v1.admin.{nonce}.{mac}"
    response = client.get("/widget/api/conversation", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_session"


def test_an_unknown_persona_is_refused_by_name(client: httpx.Client) -> None:
    response = client.post("/widget/api/sessions", json={"persona": "nobody"})

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_persona"
    assert response.json()["error"]["available"] == ["pine"]


# --- bad input ------------------------------------------------------------------------


def test_an_oversize_message_gets_413_with_the_limit_and_reaches_no_model(
    web_server: LiveServer, client: httpx.Client
) -> None:
    headers = _session(client)

    response = client.post("/widget/api/messages", json={"text": "x" * 4001}, headers=headers)

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "message_too_long",
        "message": "the message is 4,001 characters long; the limit is 4,000",
        "limit": 4000,
    }
    assert web_server.generator.requests == []
    assert web_server.messages() == []


def test_an_oversize_body_gets_413_before_it_is_read(client: httpx.Client) -> None:
    headers = _session(client)

    response = client.post(
        "/widget/api/messages", content=b'{"text": "' + b"x" * 70_000 + b'"}',
        headers={**headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_a_chunked_oversize_body_is_cut_off_too(client: httpx.Client) -> None:
    headers = _session(client)

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = client.post(
        "/widget/api/messages", content=chunks(),
        headers={**headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize(("content", "content_type", "status", "code"), [
    (b"{not json", "application/json", 400, "invalid_json"),
    (b"\xff\xfe", "application/json", 400, "invalid_json"),
    (b'"just a string"', "application/json", 400, "invalid_request"),
    (b'{"text": 42}', "application/json", 400, "invalid_request"),
    (b'{"text": "   "}', "application/json", 400, "invalid_request"),
    (b'{"text": "hi", "client_message_id": "../../etc"}', "application/json", 400,
     "invalid_request"),
    (b"text=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b'{"text": "hi"}', "text/plain", 415, "unsupported_media_type"),
])
def test_malformed_messages_get_a_clear_error(
    web_server: LiveServer, client: httpx.Client, content: bytes, content_type: str,
    status: int, code: str,
) -> None:
    headers = _session(client)

    response = client.post("/widget/api/messages", content=content,
                           headers={**headers, "Content-Type": content_type})

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert web_server.messages() == []


def test_a_page_from_a_foreign_origin_is_refused(client: httpx.Client) -> None:
    response = client.post("/widget/api/sessions", json={},
                           headers={"Origin": "https://evil.example"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden_origin"
    assert "access-control-allow-origin" not in response.headers


def test_an_allowed_origin_gets_cors_headers(make_web_server: Any) -> None:
    server = make_web_server(server_settings={"allowed_origins": ("https://shop.example",)})
    with httpx.Client(base_url=server.url) as client:
        preflight = client.options("/widget/api/messages", headers={
            "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        })
        created = client.post("/widget/api/sessions", json={},
                              headers={"Origin": "https://shop.example"})

    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == "https://shop.example"


def test_a_flood_from_one_session_gets_429_with_retry_after(make_web_server: Any) -> None:
    server = make_web_server(session_messages_per_minute=3)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = _session(client)
        statuses = []
        for index in range(5):
            response = client.post("/widget/api/messages",
                                   json={"text": f"hi {index}", "client_message_id": f"m{index}"},
                                   headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 202:
                _stream(client, response.json()["turn_id"], headers)
        other = _session(client)
        fresh = client.post("/widget/api/messages", json={"text": "hello"}, headers=other)
        if fresh.status_code == 202:  # let its turn store the message before counting
            _stream(client, fresh.json()["turn_id"], other)

    assert statuses == [202, 202, 202, 429, 429]
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "rate_limited"
    assert response.json()["error"]["retry_after"] == int(response.headers["Retry-After"])
    assert fresh.status_code == 202  # another session is not slowed down by the flood
    assert [role for role, _ in server.messages()].count("user") == 4


def test_one_address_cannot_open_sessions_without_limit(make_web_server: Any) -> None:
    server = make_web_server(ip_sessions_per_minute=2)
    with httpx.Client(base_url=server.url) as client:
        statuses = [client.post("/widget/api/sessions", json={}).status_code for _ in range(3)]

    assert statuses == [201, 201, 429]


def test_a_second_message_while_a_reply_is_streaming_gets_409(
    web_server: LiveServer, client: httpx.Client
) -> None:
    web_server.generator.replies.append("a slow reply of several words")
    web_server.generator.delay_s = 0.1
    headers = _session(client)
    turn_id = _send(client, headers, "first", "m1")

    second = client.post("/widget/api/messages", json={"text": "second"}, headers=headers)

    assert second.status_code == 409
    assert second.json()["error"]["turn_id"] == turn_id
    _stream(client, turn_id, headers)


def test_a_busy_model_ends_the_turn_with_an_error_event_and_stores_no_reply(
    web_server: LiveServer, client: httpx.Client
) -> None:
    from botkit.errors import GeneratorBusy

    def busy(request: Any) -> str:
        raise GeneratorBusy("queue full")

    web_server.generator.replies.append(busy)
    headers = _session(client)

    events = _stream(client, _send(client, headers, "hi", "m1"), headers)

    assert events[-1][1] == "error"
    assert events[-1][2]["code"] == "busy"
    assert [role for role, _ in web_server.messages()] == ["user"]


# --- static files and shutdown ----------------------------------------------------------


def test_the_demo_page_and_widget_assets_are_served(client: httpx.Client) -> None:
    page = client.get("/")
    script = client.get("/widget.js", headers={"Origin": "https://any.example"})
    css = client.get("/widget/widget.css")

    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/widget.js"' in page.text
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert css.headers["content-type"].startswith("text/css")
    cached = client.get("/widget.js", headers={"If-None-Match": script.headers["etag"]})
    assert cached.status_code == 304


def test_a_graceful_stop_lets_a_streaming_reply_finish(make_web_server: Any) -> None:
    server = make_web_server()
    server.generator.replies.append("this reply keeps going for a little while")
    server.generator.delay_s = 0.1
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = _session(client)
        turn_id = _send(client, headers, "hi", "m1")
        stopper = threading.Timer(0.3, server.stop)  # mid-reply: it takes about 0.8 s
        started = time.monotonic()
        stopper.start()
        rest = _stream(client, turn_id, headers)
        stopper.join()

    assert rest[-1][1] == "done"
    assert rest[-1][2]["text"] == "this reply keeps going for a little while"
    assert time.monotonic() - started < 10
    # The server is gone: read its SQLite file directly.
    with sqlite3.connect(server.db_url.removeprefix("sqlite:///")) as db:
        stored = db.execute("SELECT role, text FROM messages ORDER BY id").fetchall()
    assert stored == [("user", "hi"), ("assistant", "this reply keeps going for a little while")]


def test_a_reply_still_running_when_the_grace_period_ends_is_stored_as_interrupted(
    make_web_server: Any,
) -> None:
    server = make_web_server(server_settings={"shutdown_grace_s": 0.0})
    server.generator.replies.append("a very long reply " * 50)
    server.generator.delay_s = 0.05
    with httpx.Client(base_url=server.url, timeout=10) as client:
        headers = _session(client)
        turn_id = _send(client, headers, "hi", "m1")
        first = _stream(client, turn_id, headers, stop_after=3)
    server.stop()

    with sqlite3.connect(server.db_url.removeprefix("sqlite:///")) as db:
        stored = db.execute("SELECT role, text, interrupted FROM messages ORDER BY id").fetchall()
    assert stored[0] == ("user", "hi", 0)
    role, text, interrupted = stored[1]
    assert (role, interrupted) == ("assistant", 1)
    assert text.startswith("".join(e[2]["text"] for e in first))
    assert len(stored) == 2
