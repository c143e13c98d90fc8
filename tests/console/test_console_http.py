"""The console over real HTTP (uvicorn on loopback): who may do what, and what it changes."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from botkit.console.auth import hash_password
from botkit.console.web import CSP
from botkit.memory.models import ConsoleUser
from botkit.personas import PersonaRegistry
from botkit.server.app import create_app
from tests.console.helpers import (
    PASSWORD,
    add_user,
    ask,
    client_for,
    csrf_of,
    login,
    login_form,
    state_of,
    try_login,
    waiting_chat,
)
from tests.live_server import LiveServer

# Every console route by who may use it: a new route must be added here (and so to the
# access tests below), or test_every_console_route_is_listed fails.
PUBLIC = {
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("GET", "/console/static/{name}"),
}
AGENT = {
    ("GET", "/console"),
    ("POST", "/console/logout"),
    ("GET", "/console/conversations/{conversation_id:int}"),
    ("GET", "/console/api/me"),
    ("GET", "/console/api/queue"),
    ("GET", "/console/api/conversations/{conversation_id:int}"),
    ("POST", "/console/api/conversations/{conversation_id:int}/claim"),
    ("POST", "/console/api/conversations/{conversation_id:int}/reply"),
    ("POST", "/console/api/conversations/{conversation_id:int}/hand-back"),
    ("POST", "/console/api/conversations/{conversation_id:int}/close"),
}
OPERATOR = {
    ("GET", "/console/browse"),
    ("GET", "/console/conversations/{conversation_id:int}/export"),
    ("GET", "/console/users/forget"),
    ("POST", "/console/users/forget"),
    ("GET", "/console/adapters"),
    ("GET", "/console/personas"),
    ("GET", "/console/personas/{name}"),
    ("POST", "/console/personas/{name}"),
    ("GET", "/console/personas/{name}/rollback"),
    ("POST", "/console/personas/{name}/rollback"),
    ("POST", "/console/api/personas/{name}/preview"),
}


def console_routes(server: LiveServer) -> set[tuple[str, str]]:
    assert server.engine is not None
    app = create_app(server.engine, server.config)
    found = set()
    for route in app.routes:
        path = getattr(route, "path", "")
        if path == "/console" or path.startswith("/console/"):
            for method in getattr(route, "methods", None) or ():
                if method != "HEAD":
                    found.add((method, path))
    return found


def concrete(path: str, conversation_id: int) -> str:
    return (path.replace("{conversation_id:int}", str(conversation_id))
            .replace("{name}", "console.js"))


@pytest.fixture
def client(web_server: LiveServer) -> Iterator[httpx.Client]:
    with client_for(web_server) as client:
        yield client


def test_every_console_route_is_listed(web_server: LiveServer) -> None:
    assert console_routes(web_server) == PUBLIC | AGENT | OPERATOR


def test_anonymous_requests_are_refused_on_every_console_route(
    web_server: LiveServer, client: httpx.Client
) -> None:
    conversation = waiting_chat(web_server)
    protected = console_routes(web_server) - PUBLIC
    assert protected == AGENT | OPERATOR

    for method, template in sorted(protected):
        path = concrete(template, conversation.id)
        response = client.request(method, path, json={} if "/api/" in path else None)
        if "/api/" in path:
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "unauthorized"
        else:
            assert response.status_code == 303, (method, path)
            assert response.headers["location"].startswith("/console/login?next="), path

    assert state_of(web_server, conversation.id) == ("waiting_for_agent", None)
    assert client.get("/console/login").status_code == 200
    assert client.get("/console/static/console.js").status_code == 200
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/static/secrets.txt").status_code == 404


def test_a_page_redirect_comes_back_after_logging_in(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")
    conversation = waiting_chat(web_server)

    first = client.get(f"/console/conversations/{conversation.id}")
    page = client.get(first.headers["location"])
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post("/console/login", data={
        "csrf_token": token.group(1), "username": "bea", "password": PASSWORD,
        "next": f"/console/conversations/{conversation.id}",
    })

    assert response.status_code == 303
    assert response.headers["location"] == f"/console/conversations/{conversation.id}"
    # Never off the console: an absolute or protocol-relative next goes to the queue.
    for target in ("https://evil.example/", "//evil.example/console", "/widget"):
        response = client.post("/console/login", data={
            "csrf_token": login_form(client), "username": "bea", "password": PASSWORD,
            "next": target,
        })
        assert response.headers["location"] == "/console"


def test_an_agent_gets_403_on_every_operator_route(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea", "agent")
    conversation = ask(web_server, "Hello", chat="someone")
    csrf = login(client, "bea")

    for method, template in sorted(OPERATOR):
        path = concrete(template, conversation.id)
        data = None
        if method == "POST":
            data = {"csrf_token": csrf, "channel": "web", "external_id": "someone",
                    "confirm": "yes"}
        response = client.request(method, path, data=data,
                                  params={"channel": "web", "external_id": "someone"}
                                  if method == "GET" else None)
        assert response.status_code == 403, (method, path)
        assert "for operators only" in response.text

    assert web_server.call(lambda: web_server.store.find_user("web", "someone")) is not None
    for method, path in sorted(AGENT):
        if method == "GET" and "/api/" not in path:
            assert client.get(concrete(path, conversation.id)).status_code in (200, 403)


def test_operator_pages_carry_a_strict_csp_and_no_inline_code(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "olga", "operator")
    conversation = ask(web_server, "Hello", chat="someone")
    login(client, "olga")

    for path in ("/console", "/console/browse", "/console/adapters",
                 f"/console/conversations/{conversation.id}",
                 "/console/users/forget?channel=web&external_id=someone"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP
        assert "unsafe-inline" not in CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text
        assert "style=" not in response.text
        assert "<style" not in response.text
        assert re.findall(r"<script[^>]*>", response.text) == [
            '<script src="/console/static/console.js" defer>'
        ]


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea", "agent")
    add_user(web_server, "olga", "operator")
    conversation = waiting_chat(web_server)
    csrf = login(client, "bea")
    claim = f"/console/api/conversations/{conversation.id}/claim"

    missing = client.post(claim, json={})
    wrong = client.post(claim, json={}, headers={"X-CSRF-Token": csrf[:-2] + "xx"})
    reply = client.post(f"/console/api/conversations/{conversation.id}/reply",
                        json={"text": "hi"})

    for response in (missing, wrong, reply):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_failed"
    assert state_of(web_server, conversation.id) == ("waiting_for_agent", None)

    # A token of another session is no good either.
    with client_for(web_server) as other:
        other_csrf = login(other, "olga")
        assert client.post(claim, json={}, headers={"X-CSRF-Token": other_csrf}).status_code \
            == 403
        # Forms: forgetting a user without the hidden field.
        response = other.post("/console/users/forget", data={
            "channel": "web", "external_id": "chat-1", "confirm": "yes",
        })
        assert response.status_code == 403
        assert "security token" in response.text
    assert web_server.call(lambda: web_server.store.find_user("web", "chat-1")) is not None
    assert state_of(web_server, conversation.id) == ("waiting_for_agent", None)
    # Logging out is a POST too.
    assert client.post("/console/logout").status_code == 403
    assert client.get("/console/api/queue").status_code == 200


def test_the_login_form_needs_its_token_too(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")

    response = client.post("/console/login", data={"username": "bea", "password": PASSWORD})

    assert response.status_code == 403
    assert "botkit_console=" not in response.headers.get("set-cookie", "")


def test_wrong_passwords_get_429_after_the_limit_with_retry_after(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")

    statuses = [try_login(client, "bea", "not the password").status_code for _ in range(5)]
    blocked = try_login(client, "bea", PASSWORD)

    assert statuses == [401] * 5
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert "Too many failed logins" in blocked.text
    assert "text/html" in blocked.headers["content-type"]
    assert "botkit_console=" not in blocked.headers.get("set-cookie", "")
    # Per username: from another address (127.0.0.2 is loopback too) bea is still held...
    with client_for(web_server, transport=httpx.HTTPTransport(local_address="127.0.0.2")) \
            as elsewhere:
        assert try_login(elsewhere, "bea", PASSWORD).status_code == 429
        add_user(web_server, "cid")
        assert try_login(elsewhere, "cid", PASSWORD).status_code == 303
    # ... and per address: this one may not try other usernames either.
    assert try_login(client, "cid", PASSWORD).status_code == 429


def test_unknown_users_and_wrong_passwords_get_the_same_answer(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")

    unknown = try_login(client, "nobody", PASSWORD)
    wrong = try_login(client, "bea", "not the password")

    assert unknown.status_code == wrong.status_code == 401
    assert "Wrong username or password." in unknown.text
    assert "Wrong username or password." in wrong.text


def test_the_session_cookie_is_httponly_samesite_lax_and_secure_behind_https(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")

    plain = try_login(client, "bea").headers["set-cookie"]
    proxied = try_login(client, "bea", **{"X-Forwarded-Proto": "https"}).headers["set-cookie"]

    for header in (plain, proxied):
        session = next(c for c in header.split(", botkit") if "botkit_console=" in c)
        assert "HttpOnly" in session
        assert "SameSite=Lax" in session
        assert "Path=/console" in session
        assert "Max-Age=43200" in session
    assert "Secure" not in plain
    assert "; Secure" in proxied


def test_claim_reply_hand_back_and_close_drive_the_engine(
    web_server: LiveServer, client: httpx.Client
) -> None:
    bea = add_user(web_server, "bea", display_name="Bea")
    add_user(web_server, "cid", display_name="Cid")
    conversation = waiting_chat(web_server)
    api = f"/console/api/conversations/{conversation.id}"
    csrf = login(client, "bea")
    headers = {"X-CSRF-Token": csrf}

    queue = client.get("/console/api/queue").json()
    assert [item["id"] for item in queue["waiting"]] == [conversation.id]
    assert queue["waiting"][0]["summary"] == "I want a human"
    assert queue["waiting"][0]["channel"] == "web"
    assert queue["waiting"][0]["wait_s"] >= 0

    claimed = client.post(f"{api}/claim", json={}, headers=headers)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["conversation"]["state"] == "agent"
    assert state_of(web_server, conversation.id) == ("agent", bea.id)
    assert [i["id"] for i in client.get("/console/api/queue").json()["mine"]] == \
        [conversation.id]

    with client_for(web_server) as cid:
        cid_headers = {"X-CSRF-Token": login(cid, "cid")}
        second = cid.post(f"{api}/claim", json={}, headers=cid_headers)
        assert second.status_code == 409
        assert second.json()["error"]["message"] == (
            "Bea has already taken this conversation over, so you cannot claim it."
        )
        butting_in = cid.post(f"{api}/reply", json={"text": "Me too!"}, headers=cid_headers)
        assert butting_in.status_code == 409
        assert "only they or an operator" in butting_in.json()["error"]["message"]
        assert cid.post(f"{api}/hand-back", json={}, headers=cid_headers).status_code == 409

    reply = client.post(f"{api}/reply", json={"text": "Hi, Bea here"}, headers=headers)
    assert reply.status_code == 201, reply.text
    assert reply.json()["message"]["author"] == "Bea"
    assert client.post(f"{api}/reply", json={"text": "  "}, headers=headers).status_code == 400
    ask(web_server, "Thanks, Bea!")

    view = client.get(api).json()
    assert [(m["role"], m["text"]) for m in view["messages"]] == [
        ("user", "I want a human"),
        ("assistant", view["messages"][1]["text"]),
        ("agent", "Bea from our team has joined the chat."),
        ("agent", "Hi, Bea here"),
        ("user", "Thanks, Bea!"),
    ]
    assert [e["to"] for e in view["events"]] == ["waiting_for_agent", "agent"]
    last = view["messages"][-2]["id"]
    newer = client.get(api, params={"after": last}).json()["messages"]
    assert [m["text"] for m in newer] == ["Thanks, Bea!"]
    assert web_server.generator.requests == []  # the bot stayed silent throughout

    back = client.post(f"{api}/hand-back", json={}, headers=headers)
    assert back.status_code == 200, back.text
    assert state_of(web_server, conversation.id) == ("bot", None)
    assert web_server.messages()[-1][0] == "system"
    again = client.post(f"{api}/hand-back", json={}, headers=headers)
    assert again.status_code == 409
    assert "The bot has this conversation" in again.json()["error"]["message"]
    # Agents keep seeing what they worked on, even with the bot.
    assert client.get(api).status_code == 200

    ask(web_server, "Actually, a human again please")
    closed = client.post(f"{api}/close", json={}, headers=headers)
    assert closed.status_code == 200, closed.text
    assert state_of(web_server, conversation.id) == ("closed", None)
    assert client.post(f"{api}/claim", json={}, headers=headers).json()["error"]["message"] \
        == "This conversation is closed, so you cannot claim it."


def test_agents_see_only_conversations_for_people_and_their_own(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")
    add_user(web_server, "olga", "operator")
    private = ask(web_server, "What are your opening hours?", chat="quiet")
    login(client, "bea")

    assert client.get(f"/console/api/conversations/{private.id}").status_code == 403
    assert client.get(f"/console/conversations/{private.id}").status_code == 403
    assert client.get("/console/api/conversations/99999").status_code == 404
    with client_for(web_server) as olga:
        login(olga, "olga")
        assert olga.get(f"/console/api/conversations/{private.id}").status_code == 200


def test_a_disabled_or_deleted_user_or_a_new_password_logs_the_session_out(
    web_server: LiveServer, client: httpx.Client
) -> None:
    bea = add_user(web_server, "bea")
    add_user(web_server, "cid")
    login(client, "bea")

    async def disable() -> None:
        async with web_server.store.engine.begin() as connection:
            await connection.execute(
                update(ConsoleUser).where(ConsoleUser.id == bea.id).values(disabled=True)
            )

    web_server.call(disable)
    assert client.get("/console/api/queue").status_code == 401
    assert client.get("/console").status_code == 303
    assert try_login(client, "bea").status_code == 401

    with client_for(web_server) as cid:
        login(cid, "cid")
        digest = hash_password("a new pass!!")
        web_server.call(lambda: web_server.store.set_console_password("cid", digest))
        assert cid.get("/console/api/queue").status_code == 401


def test_logging_out_ends_the_session_even_for_a_copied_cookie(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea")
    csrf = login(client, "bea")
    cookie = client.cookies.get("botkit_console")

    response = client.post("/console/logout", data={"csrf_token": csrf})

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    with client_for(web_server, cookies={"botkit_console": cookie or ""}) as copy:
        assert copy.get("/console/api/queue").status_code == 401


def test_an_operator_exports_a_conversation_as_json(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "olga", "operator")
    web_server.generator.replies.append("We open at nine.")
    conversation = ask(web_server, "When do you open?", user_name="Ann")
    login(client, "olga")

    response = client.get(f"/console/conversations/{conversation.id}/export")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert f'filename="conversation-{conversation.id}.json"' in \
        response.headers["content-disposition"]
    data = json.loads(response.text)
    assert data["conversation"]["id"] == conversation.id
    assert data["user"]["display_name"] == "Ann"
    assert [(m["role"], m["text"]) for m in data["messages"]] == [
        ("user", "When do you open?"), ("assistant", "We open at nine."),
    ]
    assert client.get("/console/conversations/99999/export").status_code == 404


def test_an_operator_forgets_a_user_after_confirming(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "olga", "operator")
    ask(web_server, "My address is 1 Elm Street", chat="ann", user_name="Ann")
    ask(web_server, "Unrelated", chat="bob", user_name="Bob")
    csrf = login(client, "olga")

    confirm = client.get("/console/users/forget", params={"channel": "web", "external_id": "ann"})
    assert confirm.status_code == 200
    assert "1 conversation" in confirm.text
    assert "2 messages" in confirm.text
    unconfirmed = client.post("/console/users/forget", data={
        "csrf_token": csrf, "channel": "web", "external_id": "ann",
    })
    assert unconfirmed.status_code == 400
    assert web_server.call(lambda: web_server.store.find_user("web", "ann")) is not None

    done = client.post("/console/users/forget", data={
        "csrf_token": csrf, "channel": "web", "external_id": "ann", "confirm": "yes",
    })

    assert done.status_code == 200
    assert "Deleted everything about" in done.text
    assert web_server.call(lambda: web_server.store.find_user("web", "ann")) is None
    assert [text for _, text in web_server.messages()] == [
        "Unrelated", web_server.generator.default,
    ]
    gone = client.get("/console/users/forget", params={"channel": "web", "external_id": "ann"})
    assert gone.status_code == 404


def test_the_conversation_browser_searches_and_escapes_what_users_wrote(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "olga", "operator")
    evil = '<img src=x onerror="alert(1)">'
    liked = ask(web_server, "Do you sell tents?", chat="ann", user_name="Ann Lee")
    disliked = ask(web_server, "Where is my parcel?", chat="bob", user_name=evil)
    other = ask(web_server, "Hello", chat="tg-1", channel="telegram", user_name="Tom")

    async def rate() -> None:
        store = web_server.store
        for conversation, score in ((liked, 1), (disliked, -1)):
            bot = [m for m in await store.messages(conversation.id) if m.role == "assistant"]
            await store.add_feedback(bot[0].id, user_id=conversation.user_id, score=score)

    web_server.call(rate)
    login(client, "olga")

    def found(**params: str) -> list[int]:
        page = client.get("/console/browse", params=params)
        assert page.status_code == 200, page.text
        return sorted(int(n) for n in re.findall(r'<td><a href="/console/conversations/(\d+)"',
                                                  page.text))

    assert found() == sorted([liked.id, disliked.id, other.id])
    assert found(user="ann") == [liked.id]
    assert found(user="AnN l") == [liked.id]
    assert found(user="tg-1") == [other.id]
    assert found(user=f"#{disliked.id}") == [disliked.id]
    assert found(user="%") == []
    assert found(channel="telegram") == [other.id]
    assert found(persona="pine") == sorted([liked.id, disliked.id, other.id])
    assert found(persona="nobody") == []
    assert found(feedback="up") == [liked.id]
    assert found(feedback="down") == [disliked.id]
    today = liked.created_at.date().isoformat()
    assert found(**{"from": today, "to": today}) == sorted([liked.id, disliked.id, other.id])
    assert found(**{"to": "2000-01-01"}) == []
    assert found(**{"from": "2999-01-01"}) == []
    assert "must be a date" in client.get("/console/browse", params={"from": "soon"}).text

    rated = client.get(f"/console/api/conversations/{liked.id}").json()["messages"]
    assert [(m["role"], m["feedback"]) for m in rated] == [("user", None), ("assistant", 1)]

    page = client.get("/console/browse").text
    assert evil not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    view = client.get(f"/console/conversations/{disliked.id}").text
    assert evil not in view


def test_the_adapters_page_shows_the_manifest_and_the_eval_scores(
    web_server: LiveServer, client: httpx.Client
) -> None:
    source = Path(__file__).resolve().parents[2] / "personas" / "adapters" / "pine"
    folder = Path(web_server.personas_dir) / "adapters" / "pine"
    folder.mkdir(parents=True)
    for name in ("botkit_manifest.json", "eval.json"):
        shutil.copy(source / name, folder / name)
    toml = Path(web_server.personas_dir) / "pine.toml"
    text = toml.read_text().replace("greeting =", 'adapter = "adapters/pine"\ngreeting =', 1)
    toml.write_text(text, encoding="utf-8")
    assert web_server.engine is not None
    web_server.engine.personas = PersonaRegistry.from_dir(web_server.personas_dir)
    add_user(web_server, "olga", "operator")
    login(client, "olga")

    page = client.get("/console/adapters").text

    assert str(folder) in page
    assert "SmolLM2-135M-Instruct" in page
    assert "rank 8, alpha 16" in page
    assert "Evaluation: 80%" in page
    assert "10%" in page  # the base model's accuracy
    assert "hyperparameters.lr" in page


def test_the_queue_page_and_the_me_api_know_who_is_there(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "bea", display_name="Bea <Support>")
    login(client, "bea")

    page = client.get("/console").text
    me = client.get("/console/api/me").json()

    assert "Bea &lt;Support&gt;" in page
    assert 'href="/console/browse"' not in page  # no operator links for agents
    assert me["name"] == "Bea <Support>"
    assert me["role"] == "agent"
    assert me["csrf_token"] == csrf_of(client)


def test_odd_ids_are_not_found_and_console_requests_are_counted_as_console(
    web_server: LiveServer, client: httpx.Client
) -> None:
    add_user(web_server, "olga", "operator")
    conversation = ask(web_server, "Hello")
    login(client, "olga")
    huge = "9" * 30

    assert client.get(f"/console/api/conversations/{huge}").status_code == 404
    assert client.get(f"/console/conversations/{huge}/export").status_code == 404
    assert client.get(f"/console/api/conversations/{conversation.id}",
                      params={"after": "²"}).status_code == 400
    assert client.get("/console/browse", params={"user": "#" + huge, "page": "²"}) \
        .status_code == 200
    metrics = client.get("/metrics").text
    assert 'botkit_requests_total{channel="console",status="404"}' in metrics
    assert 'botkit_requests_total{channel="console",status="303"}' in metrics
