"""Shared by the console tests: accounts, logging in over HTTP, a chat waiting for a person."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx

from botkit.console.auth import hash_password
from botkit.engine import IncomingMessage
from botkit.memory import ConsoleUserRecord, ConversationRecord
from tests.live_server import LiveServer

PASSWORD = "correct horse battery"
_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def add_user(
    server: LiveServer, username: str, role: str = "agent", *, password: str = PASSWORD,
    display_name: str | None = None,
) -> ConsoleUserRecord:
    digest = hash_password(password)
    return server.call(lambda: server.store.add_console_user(
        username, role=role, password_hash=digest, display_name=display_name,
    ))


def login_form(client: httpx.Client) -> str:
    """GET the login page (which sets its cookie); the form's CSRF token.

    Any session ``client`` had is dropped first: a logged-in visitor is sent on.
    """
    client.cookies.clear()
    page = client.get("/console/login")
    assert page.status_code == 200, page.text
    found = _FIELD.search(page.text)
    assert found is not None
    return found.group(1)


def try_login(
    client: httpx.Client, username: str, password: str = PASSWORD, **headers: str
) -> httpx.Response:
    token = login_form(client)
    return client.post(
        "/console/login",
        data={"csrf_token": token, "username": username, "password": password, "next": ""},
        headers=headers,
    )


def login(client: httpx.Client, username: str, password: str = PASSWORD) -> str:
    """Log ``client`` in; returns the session's CSRF token (for X-CSRF-Token)."""
    response = try_login(client, username, password)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console"
    return csrf_of(client)


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/console")
    assert page.status_code == 200, page.text
    found = _META.search(page.text)
    assert found is not None
    assert found.group(1)
    return found.group(1)


def client_for(server: LiveServer, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10, follow_redirects=False, **options)


def ask(
    server: LiveServer, text: str, *, chat: str = "chat-1", channel: str = "web",
    user_name: str | None = None,
) -> ConversationRecord:
    """A user's message through the engine; returns their conversation afterwards."""
    message = IncomingMessage(channel=channel, chat_key=chat, user_key=chat, text=text,
                              user_name=user_name)

    async def go() -> ConversationRecord:
        reply = server.engine.respond(message)  # type: ignore[union-attr]
        await reply.collect()
        found = await server.store.latest_conversation(channel, chat)
        assert found is not None
        return found

    return server.call(go)


def waiting_chat(server: LiveServer, chat: str = "chat-1", **kwargs: Any) -> ConversationRecord:
    conversation = ask(server, "I want a human", chat=chat, **kwargs)
    assert conversation.state == "waiting_for_agent"
    return conversation


def state_of(server: LiveServer, conversation_id: int) -> tuple[str, int | None]:
    found = server.call(lambda: server.store.get_conversation(conversation_id))
    assert found is not None
    return found.state, found.agent_id


class _FormReader(HTMLParser):
    """The named inputs, textareas and selects of one ``<form id=...>`` of a page."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, str] = {}
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "form":
            self.inside = found.get("id") == self.form_id
        elif self.inside and tag == "input" and "name" in found:
            self.fields[found["name"]] = found.get("value", "")
        elif self.inside and tag == "textarea" and "name" in found:
            self._textarea = found["name"]
            self.fields[self._textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self._textarea is not None:
            # Like a browser: the line break right after <textarea> is not in the value.
            self.fields[self._textarea] = self.fields[self._textarea].removeprefix("\n")
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea] += data


def form_fields(page: str, form_id: str) -> dict[str, str]:
    """What a browser would submit from the form ``form_id`` of ``page`` (unchanged)."""
    reader = _FormReader(form_id)
    reader.feed(page)
    assert reader.fields, f"no form {form_id!r} on the page"
    return reader.fields
