"""The network edge of Discord, replaced: a ``discord.http.HTTPClient`` that answers REST
calls like Discord, an ``AsyncWebhookAdapter`` for interaction responses, and gateway
payloads shaped like the real ones.

Everything above that edge is the real discord.py 2.7: ``Client``, ``ConnectionState``
(payloads go through ``parse_guild_create`` / ``parse_message_create``, which dispatch
``on_message``), ``Message.reply``, ``Messageable.typing``, ``CommandTree`` and
``Interaction``.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass
from typing import Any

import discord
from discord.http import HTTPClient, Route
from discord.webhook.async_ import AsyncWebhookAdapter

TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.fake.token-not-a-real-one"
BOT_ID = 1100000000000000001
APP_ID = BOT_ID
BOT_NAME = "Pine"
GUILD_ID = 1200000000000000001
GENERAL_ID = 1200000000000000002  # a text channel
HELP_ID = 1200000000000000003  # a text channel, for answer_channels
THREAD_ID = 1200000000000000010  # a public thread in #general
DM_CHANNEL_ID = 1300000000000000001  # Ann's DM channel with the bot
ANN_ID = 1400000000000000042
BEN_ID = 1400000000000000043
OTHER_BOT_ID = 1400000000000000099
TIMESTAMP = "2026-05-01T10:00:00.000000+00:00"

_MESSAGE_PATH = re.compile(r"/channels/(\d+)/messages(?:/(\d+))?$")


@dataclass
class Call:
    """One request that reached the network edge."""

    method: str
    path: str
    """The route's template, e.g. ``/channels/{channel_id}/messages``."""
    url: str
    json: Any
    """The JSON body: a dict for messages, a list for a command sync, None for none."""
    at: float
    """The clock's time when the request was made."""
    rate_limited: bool = False
    """Answered with a 429 (raised as :class:`discord.RateLimited`)."""

    @property
    def content(self) -> str | None:
        return self.json.get("content") if isinstance(self.json, dict) else None

    @property
    def channel_id(self) -> int | None:
        found = _MESSAGE_PATH.search(self.url) or re.search(r"/channels/(\d+)", self.url)
        return int(found.group(1)) if found else None


class FakeClock:
    """Virtual time: ``sleep`` advances it at once (but still yields to the loop)."""

    def __init__(self) -> None:
        self.time = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass
class _Response:
    """What ``discord.HTTPException`` reads from an aiohttp response."""

    status: int
    reason: str


class _Edge:
    """Recording and 429 scripting shared by the REST and webhook fakes."""

    clock: Any
    calls: list[Call]
    _limits: dict[tuple[str, str], tuple[float, int]]
    _windows: dict[tuple[str, str], float]

    def _setup(self, clock: Any) -> None:
        self.clock = clock
        self.calls = []
        self._limits = {}
        self._windows = {}
        self._ids = itertools.count(1500000000000000001)

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else time.monotonic()

    def rate_limit(self, method: str, path: str, retry_after: float, *,
                   after: int = 0) -> None:
        """The next ``method path`` (after ``after`` more that succeed) gets a 429 that
        discord.py does not wait out itself (longer than ``max_ratelimit_timeout``): it
        raises ``RateLimited``, and the route stays limited for ``retry_after`` seconds
        of the clock."""
        self._limits[(method, path)] = (retry_after, after)

    def _record(self, method: str, path: str, url: str, json: Any) -> Call:
        call = Call(method, path, url, json, self.now())
        self.calls.append(call)
        key = (method, path)
        if key in self._limits:
            retry_after, after = self._limits.pop(key)
            if after > 0:
                self._limits[key] = (retry_after, after - 1)
                return call
            self._windows[key] = call.at + retry_after
            call.rate_limited = True
            raise discord.RateLimited(retry_after)
        until = self._windows.get(key)
        if until is not None and call.at < until:
            call.rate_limited = True
            raise discord.RateLimited(until - call.at)
        return call

    def called(self, method: str | None = None, path: str | None = None, *,
               ok: bool = True) -> list[Call]:
        """Calls matching ``method`` and ``path``; only those that succeeded if ``ok``."""
        return [c for c in self.calls
                if (method is None or c.method == method) and (path is None or c.path == path)
                and not (ok and c.rate_limited)]

    def next_id(self) -> int:
        return next(self._ids)


class FakeDiscordHTTP(_Edge, HTTPClient):
    """Discord's REST API: records every :class:`Route` and answers with JSON shaped like
    Discord's. ``token_valid=False`` answers 401 to ``GET /users/@me``; ``latency_s``
    makes sending and editing messages take that long (real time), like a network."""

    def __init__(self, *, clock: Any = None, token_valid: bool = True,
                 latency_s: float = 0.0) -> None:
        HTTPClient.__init__(self, asyncio.get_running_loop())
        self._setup(clock)
        self.token_valid = token_valid
        self.latency_s = latency_s
        self.synced: list[dict[str, Any]] = []

    async def request(self, route: Route, *, files: Any = None, form: Any = None,
                      **kwargs: Any) -> Any:
        call = self._record(route.method, route.path, route.url, kwargs.get("json"))
        key = f"{route.method} {route.path}"
        if key == "GET /users/@me":
            if not self.token_valid:
                raise discord.HTTPException(_Response(401, "Unauthorized"),
                                            {"message": "401: Unauthorized", "code": 0})
            return user_payload(BOT_ID, BOT_NAME, bot=True)
        if key == "GET /oauth2/applications/@me":
            return application_payload()
        if key == "POST /channels/{channel_id}/typing":
            return None
        if key in ("PUT /applications/{application_id}/commands",
                   "PUT /applications/{application_id}/guilds/{guild_id}/commands"):
            self.synced = list(call.json or [])
            return [dict(c, id=str(self.next_id()), application_id=str(APP_ID), version="1")
                    for c in self.synced]
        if key == "POST /channels/{channel_id}/messages":
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            assert call.channel_id is not None
            return message_payload(str((call.json or {}).get("content", "")),
                                   message_id=self.next_id(), channel_id=call.channel_id,
                                   author=BOT)
        if key == "PATCH /channels/{channel_id}/messages/{message_id}":
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            found = _MESSAGE_PATH.search(route.url)
            assert found is not None
            return message_payload(str((call.json or {}).get("content", "")),
                                   message_id=int(found.group(2)),
                                   channel_id=int(found.group(1)), author=BOT, edited=True)
        raise AssertionError(f"the fake Discord does not know {key}")

    # Helpers for assertions ---------------------------------------------------------------

    def sent(self, channel_id: int | None = None) -> list[Call]:
        """Messages created (successfully), in order."""
        return [c for c in self.called("POST", "/channels/{channel_id}/messages")
                if channel_id is None or c.channel_id == channel_id]

    def edits(self) -> list[Call]:
        return self.called("PATCH", "/channels/{channel_id}/messages/{message_id}")

    def texts(self, channel_id: int | None = None) -> list[str]:
        return [str(c.content) for c in self.sent(channel_id)]


class FakeWebhookAdapter(_Edge, AsyncWebhookAdapter):
    """Interaction responses (``defer``, ``send_message``, ``edit_original_response``,
    ``followup.send``) as Discord answers them."""

    def __init__(self, *, clock: Any = None) -> None:
        AsyncWebhookAdapter.__init__(self)
        self._setup(clock)

    async def request(self, route: Route, session: Any, *,
                      payload: dict[str, Any] | None = None, multipart: Any = None,
                      proxy: Any = None, proxy_auth: Any = None, files: Any = None,
                      reason: str | None = None, auth_token: str | None = None,
                      params: dict[str, Any] | None = None) -> Any:
        call = self._record(route.method, route.path, route.url, payload)
        key = f"{route.method} {route.path}"
        if key == "POST /interactions/{webhook_id}/{webhook_token}/callback":
            body = call.json or {}
            flags = int((body.get("data") or {}).get("flags", 0))
            return {"interaction": {
                "id": str(route.webhook_id), "type": 2,
                "response_message_loading": body.get("type") == 5,
                "response_message_ephemeral": bool(flags & 64),
            }}
        if key in ("PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original",
                   "POST /webhooks/{webhook_id}/{webhook_token}"):
            return message_payload(str((call.json or {}).get("content", "")),
                                   message_id=self.next_id(), channel_id=GENERAL_ID,
                                   author=BOT, webhook_id=APP_ID)
        raise AssertionError(f"the fake Discord does not know {key}")

    def callbacks(self) -> list[dict[str, Any]]:
        """The interaction responses (``type`` 4: a message, 5: deferred)."""
        return [c.json or {} for c in
                self.called("POST", "/interactions/{webhook_id}/{webhook_token}/callback")]

    def edits(self) -> list[Call]:
        return self.called("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/@original")

    def followups(self) -> list[Call]:
        return self.called("POST", "/webhooks/{webhook_id}/{webhook_token}")


# -- payloads ---------------------------------------------------------------------------


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": str(user_id), "username": name.lower(), "discriminator": "0",
        "global_name": name, "avatar": None, "public_flags": 0,
    }
    if bot:
        user.update(bot=True, discriminator="4821", global_name=None, username=name,
                    verified=True, mfa_enabled=False, flags=0)
    return user


BOT = user_payload(BOT_ID, BOT_NAME, bot=True)
ANN = user_payload(ANN_ID, "Ann")
BEN = user_payload(BEN_ID, "Ben")
OTHER_BOT = user_payload(OTHER_BOT_ID, "Gizmo", bot=True)


def application_payload() -> dict[str, Any]:
    """``GET /oauth2/applications/@me`` as ``Client.login`` reads it."""
    return {
        "id": str(APP_ID), "name": BOT_NAME, "description": "", "icon": None,
        "bot_public": False, "bot_require_code_grant": False,
        "owner": user_payload(ANN_ID, "Ann"), "verify_key": "0" * 64, "flags": 1 << 19,
        "team": None, "summary": "",
    }


def member_payload(user: dict[str, Any], *, nick: str | None = None) -> dict[str, Any]:
    return {"user": user, "roles": [], "joined_at": TIMESTAMP, "deaf": False, "mute": False,
            "flags": 0, "nick": nick, "pending": False}


def guild_create_payload() -> dict[str, Any]:
    """GUILD_CREATE for "Harbor & Pine", with #general, #help, a thread in #general, Ann
    and the bot as members and the @everyone role (whose id is the guild's)."""
    text_channel = {"type": 0, "guild_id": str(GUILD_ID), "position": 0,
                    "permission_overwrites": [], "nsfw": False, "parent_id": None,
                    "rate_limit_per_user": 0, "topic": None, "last_message_id": None}
    return {
        "id": str(GUILD_ID), "name": "Harbor & Pine", "icon": None, "owner_id": str(ANN_ID),
        "unavailable": False, "member_count": 3, "large": False, "features": [],
        "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0, "mfa_level": 0, "premium_tier": 0, "nsfw_level": 0,
        "preferred_locale": "en-US", "system_channel_id": None, "afk_channel_id": None,
        "afk_timeout": 300, "joined_at": TIMESTAMP, "emojis": [], "stickers": [],
        "roles": [
            {"id": str(GUILD_ID), "name": "@everyone", "permissions": "1071698660929",
             "position": 0, "color": 0, "hoist": False, "managed": False,
             "mentionable": False, "flags": 0},
            {"id": str(GUILD_ID + 100), "name": "Staff", "permissions": "0", "position": 1,
             "color": 0, "hoist": True, "managed": False, "mentionable": True, "flags": 0},
        ],
        "channels": [
            dict(text_channel, id=str(GENERAL_ID), name="general"),
            dict(text_channel, id=str(HELP_ID), name="help", position=1),
        ],
        "threads": [{
            "id": str(THREAD_ID), "guild_id": str(GUILD_ID), "parent_id": str(GENERAL_ID),
            "owner_id": str(ANN_ID), "name": "tent sizes", "type": 11,
            "last_message_id": None, "message_count": 3, "member_count": 2,
            "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 3,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                "archive_timestamp": TIMESTAMP, "locked": False,
                                "create_timestamp": TIMESTAMP},
        }],
        "members": [member_payload(BOT), member_payload(ANN)],
        "voice_states": [], "presences": [], "stage_instances": [],
        "guild_scheduled_events": [], "soundboard_sounds": [],
    }


def message_payload(
    content: str, *, message_id: int, channel_id: int = GENERAL_ID,
    author: dict[str, Any] = ANN, guild: bool = False,
    mentions: list[dict[str, Any]] | None = None, mention_roles: list[int] | None = None,
    reply_to: dict[str, Any] | None = None, edited: bool = False,
    webhook_id: int | None = None, message_type: int = 0,
) -> dict[str, Any]:
    """A message as Discord sends it (MESSAGE_CREATE, or a REST answer)."""
    message: dict[str, Any] = {
        "id": str(message_id), "channel_id": str(channel_id), "author": author,
        "content": content, "timestamp": TIMESTAMP,
        "edited_timestamp": TIMESTAMP if edited else None, "tts": False,
        "mention_everyone": False, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "components": [], "pinned": False,
        "type": message_type, "flags": 0,
    }
    if guild:
        message["guild_id"] = str(GUILD_ID)
        message["member"] = {k: v for k, v in member_payload(author).items() if k != "user"}
        message["mentions"] = [dict(u, member={k: v for k, v in member_payload(u).items()
                                               if k != "user"}) for u in mentions or []]
    else:
        message["mentions"] = list(mentions or [])
    if mention_roles:
        message["mention_roles"] = [str(r) for r in mention_roles]
    if webhook_id is not None:
        message["webhook_id"] = str(webhook_id)
    if reply_to is not None:
        message["type"] = 19
        message["message_reference"] = {
            "type": 0, "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
            **({"guild_id": str(GUILD_ID)} if guild else {}),
        }
        message["referenced_message"] = reply_to
    return message


def guild_message(content: str, *, message_id: int, channel_id: int = GENERAL_ID,
                  author: dict[str, Any] = ANN, mentions: list[dict[str, Any]] | None = None,
                  mention_roles: list[int] | None = None,
                  reply_to: dict[str, Any] | None = None,
                  message_type: int = 0) -> dict[str, Any]:
    """MESSAGE_CREATE in the guild (``#general`` unless ``channel_id`` says otherwise);
    ``message_type`` 7 is "X joined the server", 6 "X pinned a message"."""
    return message_payload(content, message_id=message_id, channel_id=channel_id,
                           author=author, guild=True, mentions=mentions,
                           mention_roles=mention_roles, reply_to=reply_to,
                           message_type=message_type)


def dm_message(content: str, *, message_id: int, author: dict[str, Any] = ANN,
               channel_id: int = DM_CHANNEL_ID) -> dict[str, Any]:
    """MESSAGE_CREATE in a DM: no ``guild_id``, so discord.py makes a ``DMChannel``."""
    return message_payload(content, message_id=message_id, channel_id=channel_id,
                           author=author)


def mention(user_id: int = BOT_ID) -> str:
    return f"<@{user_id}>"


def interaction_payload(
    command: str, options: dict[str, str] | None = None, *, interaction_id: int,
    channel_id: int = GENERAL_ID, user: dict[str, Any] = ANN, dm: bool = False,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a slash command, in the guild or (``dm``) in a DM."""
    data: dict[str, Any] = {
        "id": str(interaction_id), "application_id": str(APP_ID), "type": 2,
        "token": f"interaction-token-{interaction_id}", "version": 1,
        "attachment_size_limit": 10 * 1024 * 1024, "app_permissions": "1071698660929",
        "locale": "en-US", "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD_ID)},
        "data": {
            "id": str(interaction_id + 1), "name": command, "type": 1,
            "options": [{"type": 3, "name": k, "value": v} for k, v in (options or {}).items()],
        },
    }
    if dm:
        data.update(
            user=user, context=1,
            channel={"id": str(channel_id), "type": 1, "recipients": [user], "flags": 0},
            channel_id=str(channel_id),
        )
    else:
        member = dict(member_payload(user), permissions="1071698660929")
        data.update(
            guild_id=str(GUILD_ID), guild={"id": str(GUILD_ID), "locale": "en-US",
                                           "features": []},
            guild_locale="en-US", member=member, context=0, channel_id=str(channel_id),
            channel={"id": str(channel_id), "type": 11 if channel_id == THREAD_ID else 0,
                     "guild_id": str(GUILD_ID), "name": "general", "position": 0,
                     "permission_overwrites": [], "nsfw": False, "flags": 0},
        )
    return data


def interaction(client: discord.Client, payload: dict[str, Any]) -> discord.Interaction[Any]:
    """An interaction built as discord.py's own tests build them."""
    return discord.Interaction(data=payload, state=client._connection)  # type: ignore[arg-type]


def bot_reply_payload(text: str, *, message_id: int,
                      channel_id: int = GENERAL_ID) -> dict[str, Any]:
    """One of the bot's earlier answers, as it appears in ``referenced_message``."""
    return message_payload(text, message_id=message_id, channel_id=channel_id, author=BOT)


@dataclass
class Inbox:
    """Feeds gateway events into a client's connection state, as the websocket's
    dispatcher would: GUILD_CREATE fills the cache, MESSAGE_CREATE dispatches
    ``on_message``."""

    client: discord.Client

    def guild_create(self) -> None:
        self.client._connection.parse_guild_create(guild_create_payload())  # type: ignore[arg-type]

    def message(self, payload: dict[str, Any]) -> None:
        self.client._connection.parse_message_create(payload)  # type: ignore[arg-type]
