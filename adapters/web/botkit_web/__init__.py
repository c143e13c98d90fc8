"""botkit's customer-service web widget: the ``web`` channel adapter.

``botkit serve`` mounts the routes of :meth:`WebAdapter.http_routes`: the widget's
script and styles, a demo page at ``/`` and the JSON + server-sent-events API of
``adapters/web/PROTOCOL.md``. A session is an opaque signed token held by the browser;
it is the only key to its conversation (the chat key stored in SQL is a hash of it).

Each message starts a *turn*: a background task that streams the engine's reply into
an event buffer. The browser reads the buffer as an event stream and, after losing the
connection, resumes with ``Last-Event-ID`` from exactly where it stopped; a reload finds
the turn again through ``GET /widget/api/conversation``. A turn outlives its HTTP
connection, so a reply in progress is never cut off by a flaky network.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from botkit.adapters import Adapter
from botkit.engine import IncomingMessage
from botkit.errors import (
    ConfigError,
    EmptyMessageError,
    GenerationTimeout,
    GeneratorBusy,
    MemoryStoreError,
    MessageTooLongError,
)
from botkit.server.http import (
    HTTPProblem,
    RateLimiter,
    client_ip,
    rate_limited,
    read_json,
)

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine
    from botkit.server.app import Server

__all__ = ["WebAdapter", "WebSettings"]

log = logging.getLogger(__name__)

CHANNEL = "web"
#: The demo page's policy: the widget must work under it (the browser tests check).
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_KEEPALIVE_S = 15.0
_TOKEN_VERSION = "v1"
_PERSONA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class WebSettings:
    """``[adapters.web]``: limits of the widget's API."""

    persona: str | None = None
    """Persona of sessions that name none (default: ``[bot] default_persona``)."""
    session_messages_per_minute: float = 20
    """Messages one browser session may send per minute (bursts up to that many)."""
    ip_messages_per_minute: float = 60
    """Messages all sessions of one IP address may send per minute."""
    ip_sessions_per_minute: float = 30
    """New sessions one IP address may start per minute."""
    turn_buffer_s: float = 300.0
    """How long a finished reply's events stay available to a reconnecting browser."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Session:
    token: str
    persona: str

    @property
    def chat_key(self) -> str:
        # The database never sees the token itself: a leaked dump cannot open a session.
        return hashlib.sha256(self.token.encode("ascii")).hexdigest()[:40]


class SessionSigner:
    """Issues and checks ``v1.<persona>.<random>.<mac>`` tokens (HMAC-SHA256)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, persona: str, nonce: str) -> str:
        message = f"{_TOKEN_VERSION}.{persona}.{nonce}".encode("ascii")
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest()[:18])

    def issue(self, persona: str) -> Session:
        nonce = _b64(secrets.token_bytes(24))
        return Session(f"{_TOKEN_VERSION}.{persona}.{nonce}.{self._mac(persona, nonce)}", persona)

    def check(self, token: str) -> Session | None:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _TOKEN_VERSION or not token.isascii():
            return None
        _, persona, nonce, mac = parts
        if not _PERSONA_NAME.match(persona) or not hmac.compare_digest(
            mac, self._mac(persona, nonce)
        ):
            return None
        return Session(token, persona)


def load_secret(config: Any) -> bytes:
    """BOTKIT_WIDGET_SECRET, else a random secret kept in ``<data_dir>/widget_secret``.

    Kept on disk so that sessions (and so conversations) survive a restart.
    """
    from_env = config.secret("widget_secret")
    if from_env:
        if len(from_env) < 16:
            raise ConfigError("BOTKIT_WIDGET_SECRET must be at least 16 characters long")
        return from_env.encode("utf-8")
    path = Path(config.data_dir) / "widget_secret"
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ConfigError(f"{path} is not a hex secret; delete it to make a new one") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret.hex() + "\n")
    return secret


@dataclass
class Turn:
    """One reply being streamed: its events, kept for reconnecting readers."""

    id: str
    chat_key: str
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    done: bool = False
    finished_at: float | None = None
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        if self.done:
            return
        self.events.append((event, data))
        if event in ("done", "error"):
            self.done = True
            self.finished_at = time.monotonic()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int) -> AsyncIterator[tuple[int, str, dict[str, Any]] | None]:
        """Events after id ``after`` as ``(id, event, data)``; None when idle a while."""
        sent = after
        while True:
            while sent < len(self.events):
                event, data = self.events[sent]
                sent += 1
                yield sent, event, data
            if self.done:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(_KEEPALIVE_S):
                    await changed.wait()
            except TimeoutError:
                yield None


class WebAdapter(Adapter):
    """The web widget channel: lives inside ``botkit serve`` (it has no loop of its own)."""

    name = "web"

    def __init__(self, engine: DialogueEngine, config: Any = None) -> None:
        super().__init__(engine, config)
        settings: WebSettings = self.config
        self.settings = settings
        self._signer: SessionSigner | None = None
        self._server: Server | None = None
        self._turns: dict[str, Turn] = {}
        self._pending: dict[str, Turn] = {}
        self._client_ids: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._session_limit = RateLimiter(settings.session_messages_per_minute)
        self._ip_message_limit = RateLimiter(settings.ip_messages_per_minute)
        self._ip_session_limit = RateLimiter(settings.ip_sessions_per_minute)
        self._accepting = True

    @classmethod
    def validate_config(cls, raw: dict[str, Any]) -> WebSettings:
        known = {f.name: f for f in fields(WebSettings)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(
                f"[adapters.web] has unknown key(s): {', '.join(unknown)} "
                f"(known: {', '.join(known)})"
            )
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "persona":
                if value is not None and not isinstance(value, str):
                    raise ConfigError("[adapters.web] persona must be a persona name")
                values[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"[adapters.web] {key} must be a positive number, not {value!r}")
            values[key] = float(value)
        return WebSettings(**values)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._accepting = True
        persona = self.settings.persona
        if persona is not None and persona not in self.engine.personas:
            raise ConfigError(f"[adapters.web] persona {persona!r} is not a loaded persona")

    async def stop(self, grace_s: float = 30.0) -> None:
        """Refuse new messages, let replies in progress finish for ``grace_s``, then cancel.

        A cancelled reply is stored as far as it was sent, flagged ``interrupted``.
        """
        self._accepting = False
        running = [t.task for t in self._turns.values() if t.task and not t.task.done()]
        if not running:
            return
        log.info("web: waiting up to %g s for %d replies in progress", grace_s, len(running))
        _, late = await asyncio.wait(running, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("web: %d replies did not finish in time and were cancelled", len(late))
            await asyncio.gather(*late, return_exceptions=True)

    def http_routes(self, server: Any) -> Sequence[BaseRoute]:
        self._server = server
        self._signer = SessionSigner(load_secret(server.config))
        return [
            Route("/", self._demo, methods=["GET"]),
            Route("/widget.js", self._static("widget.js", "text/javascript"), methods=["GET"]),
            Route(
                "/widget/widget.css", self._static("widget.css", "text/css"), methods=["GET"]
            ),
            Route("/widget/demo.css", self._static("demo.css", "text/css"), methods=["GET"]),
            Route("/widget/api/sessions", self._create_session, methods=["POST"]),
            Route("/widget/api/conversation", self._conversation, methods=["GET"]),
            Route("/widget/api/messages", self._post_message, methods=["POST"]),
            Route("/widget/api/turns/{turn_id}/events", self._events, methods=["GET"]),
            Route("/widget/api/feedback", self._feedback, methods=["POST"]),
            Route("/widget/api/reset", self._reset, methods=["POST"]),
        ]

    # -- static files ----------------------------------------------------------------------

    def _static(self, name: str, media_type: str) -> Any:
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

        async def serve(request: Request) -> Response:
            headers = {"ETag": etag, "Cache-Control": "public, max-age=300",
                       "Access-Control-Allow-Origin": "*",
                       "Cross-Origin-Resource-Policy": "cross-origin"}
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(body, media_type=f"{media_type}; charset=utf-8", headers=headers)

        return serve

    async def _demo(self, request: Request) -> Response:
        body = resources.files(__package__).joinpath("static", "demo.html").read_bytes()
        return Response(body, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": DEMO_CSP,
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
        })

    # -- sessions --------------------------------------------------------------------------

    @property
    def server(self) -> Server:
        assert self._server is not None, "http_routes() has not been called"
        return self._server

    @property
    def max_body(self) -> int:
        return int(self.server.config.server.max_body_bytes)

    def _session(self, request: Request) -> Session:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        session = None
        if scheme.lower() == "bearer" and token and self._signer is not None:
            session = self._signer.check(token.strip())
        if session is None:
            raise HTTPProblem(
                401, "invalid_session",
                "the session token is missing, expired or not valid; start a new session",
                headers={"WWW-Authenticate": 'Bearer realm="botkit-widget"'},
            )
        if session.persona not in self.engine.personas:
            raise HTTPProblem(
                401, "invalid_session", f"persona {session.persona!r} is no longer served; "
                "start a new session",
            )
        return session

    def _persona_json(self, name: str) -> dict[str, Any]:
        persona = self.engine.persona(name)
        return {
            "name": persona.name,
            "display_name": persona.display_name,
            "greeting": persona.greeting,
        }

    async def _create_session(self, request: Request) -> Response:
        body = await read_json(request, self.max_body) if await _has_body(request) else {}
        if not isinstance(body, dict):
            raise HTTPProblem(400, "invalid_request", "the body must be a JSON object")
        retry = self._ip_session_limit.hit(client_ip(request))
        if retry:
            raise rate_limited(retry, "new sessions from your address")
        name = body.get("persona") or self.settings.persona or self.engine.default_persona
        if not isinstance(name, str) or name not in self.engine.personas:
            raise HTTPProblem(
                404, "unknown_persona", f"no persona named {name!r} is served here",
                available=sorted(self.engine.personas),
            )
        assert self._signer is not None
        session = self._signer.issue(self.engine.persona(name).name)
        return JSONResponse(
            {"token": session.token, "persona": self._persona_json(session.persona)},
            status_code=201, headers={"Cache-Control": "no-store"},
        )

    async def _conversation(self, request: Request) -> Response:
        session = self._session(request)
        conversation = await _store_call(
            self.engine.store.latest_conversation(CHANNEL, session.chat_key)
        )
        messages: list[dict[str, Any]] = []
        persona = session.persona
        if conversation is not None:
            persona = conversation.persona if conversation.persona in self.engine.personas \
                else persona
            records = await _store_call(self.engine.store.messages(conversation.id))
            scores = await _store_call(self.engine.store.feedback_scores(
                [r.id for r in records if r.role != "user"]
            ))
            agents = await self._agent_names({r.agent_id for r in records if r.agent_id})
            messages = [
                {
                    "id": r.id,
                    "role": r.role,
                    "text": r.text,
                    "created_at": r.created_at.isoformat(),
                    "feedback": scores.get(r.id),
                    "interrupted": r.interrupted,
                    **({"author": agents.get(r.agent_id or 0, "Support team")}
                       if r.role == "agent" else {}),
                }
                for r in records
                if r.role in ("user", "assistant", "agent")
            ]
        pending = self._pending.get(session.chat_key)
        return JSONResponse({
            "persona": self._persona_json(persona),
            "state": conversation.state if conversation is not None else "bot",
            "messages": messages,
            "pending": {"turn_id": pending.id} if pending and not pending.done else None,
        }, headers={"Cache-Control": "no-store"})

    async def _agent_names(self, ids: set[int]) -> dict[int, str]:
        names: dict[int, str] = {}
        for agent_id in ids:
            found = await _store_call(self.engine.store.console_user(user_id=agent_id))
            if found is not None:
                names[agent_id] = found.display_name or found.username
        return names

    # -- messages and turns ----------------------------------------------------------------

    async def _post_message(self, request: Request) -> Response:
        session = self._session(request)
        body = await read_json(request, self.max_body)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise HTTPProblem(400, "invalid_request", 'send {"text": "...", "client_message_id": '
                              '"..."}', param="text")
        client_id = body.get("client_message_id")
        if client_id is not None and not (
            isinstance(client_id, str) and _CLIENT_ID.match(client_id)
        ):
            raise HTTPProblem(
                400, "invalid_request",
                "client_message_id must be 1 to 64 letters, digits, '-' or '_'",
                param="client_message_id",
            )
        if client_id is not None:
            known = self._client_ids.get((session.chat_key, client_id))
            if known is not None:  # a retried POST: the same turn, nothing new
                return JSONResponse({"turn_id": known}, status_code=202)
        try:
            self.engine.check_input(body["text"])
        except MessageTooLongError as exc:
            raise HTTPProblem(
                413, "message_too_long",
                f"the message is {exc.length:,} characters long; the limit is {exc.limit:,}",
                limit=exc.limit,
            ) from None
        except EmptyMessageError:
            raise HTTPProblem(400, "invalid_request", "the message is empty",
                              param="text") from None
        if not self._accepting:
            raise HTTPProblem(503, "unavailable", "the server is shutting down; retry soon",
                              headers={"Retry-After": "5"})
        pending = self._pending.get(session.chat_key)
        if pending is not None and not pending.done:
            raise HTTPProblem(
                409, "turn_in_progress", "wait for the reply in progress before sending more",
                turn_id=pending.id,
            )
        for limiter, key, what in (
            (self._session_limit, session.chat_key, "messages in this chat"),
            (self._ip_message_limit, client_ip(request), "messages from your address"),
        ):
            retry = limiter.hit(key)
            if retry:
                self.server.metrics.errors.labels(CHANNEL, "rate_limited").inc()
                raise rate_limited(retry, what)
        self._expire_turns()
        turn = Turn(id=secrets.token_urlsafe(12), chat_key=session.chat_key)
        self._turns[turn.id] = turn
        self._pending[session.chat_key] = turn
        if client_id is not None:
            self._client_ids[(session.chat_key, client_id)] = turn.id
            while len(self._client_ids) > 50_000:
                self._client_ids.popitem(last=False)
        message = IncomingMessage(
            channel=CHANNEL,
            chat_key=session.chat_key,
            user_key=session.chat_key,
            text=body["text"],
            platform_message_id=client_id,
        )
        turn.task = asyncio.create_task(self._run_turn(turn, message, session.persona))
        return JSONResponse({"turn_id": turn.id}, status_code=202)

    async def _run_turn(self, turn: Turn, message: IncomingMessage, persona: str) -> None:
        metrics = self.server.metrics
        outcome = "error"
        reply = None
        try:
            async with self.engine.respond(message, persona=persona) as reply:
                async for piece in reply:
                    turn.emit("delta", {"text": piece})
            turn.emit("done", {
                "message_id": reply.message_id, "text": reply.text,
                "duplicate": reply.duplicate, "handoff": reply.handoff,
            })
            outcome = "ok"
        except GeneratorBusy:
            outcome = "busy"
            turn.emit("error", {"code": "busy", "message": "the model is busy; retry shortly"})
        except GenerationTimeout as exc:
            turn.emit("error", {"code": "timeout", "message": str(exc)})
        except MemoryStoreError as exc:
            log.error("web: turn %s: database error: %s", turn.id, exc)
            turn.emit("error", {"code": "unavailable", "message": "the conversation store is "
                                "unavailable; retry shortly"})
        except asyncio.CancelledError:
            outcome = "cancelled"
            turn.emit("error", {"code": "interrupted", "message": "the server stopped before "
                                "the reply was complete; send the message again"})
            raise
        except Exception:
            log.exception("web: turn %s failed", turn.id)
            turn.emit("error", {"code": "internal", "message": "the reply failed"})
        finally:
            if outcome != "ok":
                metrics.errors.labels(CHANNEL, outcome).inc()
            metrics.observe_reply(
                CHANNEL, outcome,
                first_token_s=reply.first_token_s if reply else None,
                duration_s=reply.duration_s if reply else None,
                tokens=reply.reply_tokens if reply else 0,
            )
            if self._pending.get(turn.chat_key) is turn:
                del self._pending[turn.chat_key]

    def _expire_turns(self) -> None:
        horizon = time.monotonic() - self.settings.turn_buffer_s
        for turn_id in [
            t.id for t in self._turns.values()
            if t.finished_at is not None and t.finished_at < horizon
        ]:
            del self._turns[turn_id]

    async def _events(self, request: Request) -> Response:
        session = self._session(request)
        turn = self._turns.get(request.path_params["turn_id"])
        if turn is None or not hmac.compare_digest(turn.chat_key, session.chat_key):
            raise HTTPProblem(
                404, "not_found", "no such reply in progress; GET /widget/api/conversation "
                "has the stored conversation",
            )
        last = request.headers.get("last-event-id", "0").strip() or "0"
        if not last.isdigit():
            raise HTTPProblem(400, "invalid_request", "Last-Event-ID must be a number")
        active = self.server.metrics.active_streams.labels(CHANNEL)

        async def stream() -> AsyncIterator[bytes]:
            active.inc()
            try:
                yield b"retry: 1000\n\n"
                async for item in turn.follow(int(last)):
                    if item is None:
                        yield b": keep-alive\n\n"
                        continue
                    event_id, event, data = item
                    payload = json.dumps(data, ensure_ascii=False)
                    yield f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n".encode()
            finally:
                active.dec()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={
            "Cache-Control": "no-store", "X-Accel-Buffering": "no",
        })

    # -- feedback and reset ----------------------------------------------------------------

    async def _feedback(self, request: Request) -> Response:
        session = self._session(request)
        body = await read_json(request, self.max_body)
        message_id = body.get("message_id") if isinstance(body, dict) else None
        score = body.get("score") if isinstance(body, dict) else None
        if not isinstance(message_id, int) or isinstance(message_id, bool) or (
            score not in (1, -1) or isinstance(score, bool)
        ):
            raise HTTPProblem(400, "invalid_request",
                              'send {"message_id": <id>, "score": 1 or -1}')
        store = self.engine.store
        record = await _store_call(store.chat_message(message_id, CHANNEL, session.chat_key))
        if record is None or record.role == "user":
            raise HTTPProblem(404, "not_found", "no bot reply with that id in this conversation")
        user = await _store_call(store.upsert_user(CHANNEL, session.chat_key, None))
        await _store_call(store.set_feedback(message_id, user_id=user.id, score=score))
        return JSONResponse({"message_id": message_id, "score": score})

    async def _reset(self, request: Request) -> Response:
        session = self._session(request)
        if await _has_body(request):
            await read_json(request, self.max_body)
        pending = self._pending.get(session.chat_key)
        if pending is not None and pending.task is not None and not pending.task.done():
            pending.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending.task
        await _store_call(self.engine.new_conversation(
            CHANNEL, session.chat_key, session.chat_key, persona=session.persona
        ))
        return JSONResponse({"persona": self._persona_json(session.persona), "messages": []})


async def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


async def _store_call(awaitable: Any) -> Any:
    try:
        return await awaitable
    except MemoryStoreError as exc:
        log.error("web: database error: %s", exc)
        raise HTTPProblem(503, "unavailable", "the conversation store is unavailable; "
                          "retry shortly", headers={"Retry-After": "5"}) from None
