"""The network edge of Telegram, replaced: a python-telegram-bot ``BaseRequest`` that
answers like the Bot API, records every call and can script failures (429, 400).

Everything above it is the real library: ``Application``, ``Bot``, ``Updater`` (long
polling really calls ``getUpdates`` here), ``Update.de_json`` and the adapter.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegram.request import BaseRequest, RequestData

BOT_ID = 777000111
BOT_USERNAME = "pine_help_bot"
TOKEN = "123456:TEST-token-not-real"


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float


class FakeClock:
    """Virtual time: ``sleep`` advances it at once (but still yields to the loop)."""

    def __init__(self) -> None:
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass
class FakeBotAPI(BaseRequest):
    """Answers Bot API methods; ``fail(method, status, description, **parameters)`` makes
    the next call of ``method`` fail like Telegram does."""

    clock: Any = None
    can_read_all_group_messages: bool = False
    token_valid: bool = True
    calls: list[Call] = field(default_factory=list)
    updates: asyncio.Queue[dict[str, Any]] | None = None
    failures: dict[str, list[tuple[int, str, dict[str, Any]]]] = field(default_factory=dict)
    handlers: dict[str, Callable[[dict[str, Any]], Any]] = field(default_factory=dict)
    _message_ids: Any = field(default_factory=lambda: itertools.count(5000))

    def __post_init__(self) -> None:
        super().__init__()

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    @property
    def read_timeout(self) -> float | None:
        return 1.0

    # -- scripting -----------------------------------------------------------------------

    def fail(self, method: str, status: int, description: str, **parameters: Any) -> None:
        self.failures.setdefault(method, []).append((status, description, parameters))

    def push_update(self, update: dict[str, Any]) -> None:
        if self.updates is None:
            self.updates = asyncio.Queue()
        self.updates.put_nowait(update)

    def called(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if not methods or c.method in methods]

    # -- the Bot API -----------------------------------------------------------------------

    async def do_request(
        self, url: str, method: str, request_data: RequestData | None = None,
        read_timeout: Any = None, write_timeout: Any = None, connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        name = url.rsplit("/", 1)[-1]
        params = dict(request_data.parameters) if request_data else {}
        now = self.clock.now() if self.clock is not None else time.monotonic()
        if name != "getUpdates":
            self.calls.append(Call(name, params, now))
        if not self.token_valid:
            return 401, json.dumps({"ok": False, "error_code": 401,
                                    "description": "Unauthorized"}).encode()
        scripted = self.failures.get(name)
        if scripted:
            status, description, parameters = scripted.pop(0)
            body: dict[str, Any] = {"ok": False, "error_code": status,
                                    "description": description}
            if parameters:
                body["parameters"] = parameters
            return status, json.dumps(body).encode()
        if name == "getUpdates":
            result: Any = await self._get_updates(params)
        elif name in self.handlers:
            result = self.handlers[name](params)
        else:
            result = self._answer(name, params)
        return 200, json.dumps({"ok": True, "result": result}).encode()

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.updates is None:
            self.updates = asyncio.Queue()
        try:
            first = await asyncio.wait_for(self.updates.get(), timeout=0.2)
        except TimeoutError:
            return []
        batch = [first]
        while not self.updates.empty():
            batch.append(self.updates.get_nowait())
        offset = int(params.get("offset") or 0)
        return [u for u in batch if u["update_id"] >= offset]

    def _answer(self, name: str, params: dict[str, Any]) -> Any:
        if name == "getMe":
            return {
                "id": BOT_ID, "is_bot": True, "first_name": "Pine",
                "username": BOT_USERNAME, "can_join_groups": True,
                "can_read_all_group_messages": self.can_read_all_group_messages,
                "supports_inline_queries": False,
            }
        if name in ("sendMessage", "editMessageText"):
            chat_id = int(params["chat_id"])
            message_id = (int(params["message_id"]) if name == "editMessageText"
                          else next(self._message_ids))
            chat_type = "private" if chat_id > 0 else "supergroup"
            return {
                "message_id": message_id, "date": int(time.time()),
                "chat": {"id": chat_id, "type": chat_type},
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Pine",
                         "username": BOT_USERNAME},
                "text": params.get("text", ""),
            }
        # setMyCommands, deleteWebhook, setWebhook, sendChatAction, sendMessageDraft, ...
        return True


def private_message(text: str, *, update_id: int, message_id: int = 1, user_id: int = 42,
                    entities: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A private-chat update as Telegram sends it."""
    message: dict[str, Any] = {
        "message_id": message_id, "date": 1_796_000_000,
        "chat": {"id": user_id, "type": "private", "first_name": "Ann"},
        "from": {"id": user_id, "is_bot": False, "first_name": "Ann", "language_code": "en"},
        "text": text,
    }
    if entities:
        message["entities"] = entities
    return {"update_id": update_id, "message": message}


def group_message(text: str, *, update_id: int, message_id: int = 1, user_id: int = 42,
                  chat_id: int = -100123, entities: list[dict[str, Any]] | None = None,
                  reply_to_bot: bool = False) -> dict[str, Any]:
    """A supergroup update as Telegram sends it."""
    message: dict[str, Any] = {
        "message_id": message_id, "date": 1_796_000_000,
        "chat": {"id": chat_id, "type": "supergroup", "title": "Harbor friends"},
        "from": {"id": user_id, "is_bot": False, "first_name": "Ann"},
        "text": text,
    }
    if entities:
        message["entities"] = entities
    if reply_to_bot:
        message["reply_to_message"] = {
            "message_id": message_id - 1, "date": 1_796_000_000,
            "chat": message["chat"],
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Pine",
                     "username": BOT_USERNAME},
            "text": "an earlier answer",
        }
    return {"update_id": update_id, "message": message}


def mention(text: str, username: str = BOT_USERNAME) -> list[dict[str, Any]]:
    """The entity Telegram adds for ``@username`` inside ``text`` (UTF-16 offsets)."""
    handle = f"@{username}"
    before = text[: text.index(handle)]
    return [{"type": "mention", "offset": len(before.encode("utf-16-le")) // 2,
             "length": len(handle)}]


def command(text: str) -> list[dict[str, Any]]:
    return [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
