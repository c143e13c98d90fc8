"""The console's HTTP surface: server-rendered pages, a small JSON API and static files.

Every route is declared with who may use it (``public``, ``agent``, ``operator``) and
goes through one gate (:meth:`Console._gate`) that reads the session cookie, re-reads
the account from the database, checks the role and, on state-changing requests, the
CSRF token. Pages answer an anonymous visitor with a redirect to the login page; the
API answers 401 JSON. Templates escape everything (Jinja2 autoescape); the JavaScript
builds the live views with ``textContent`` only, never with HTML strings.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from botkit.console.auth import (
    ConsoleSession,
    CookieSigner,
    FailureLimiter,
    load_secret,
    password_fingerprint,
    verify_or_waste_time,
)
from botkit.console.queries import ConsoleQueries, Filters
from botkit.errors import EmptyMessageError, MemoryStoreError, MessageTooLongError
from botkit.memory import ConsoleUserRecord, ConversationRecord, MessageRecord, StateConflict
from botkit.server.http import HTTPProblem, client_ip, is_loopback, read_json

if TYPE_CHECKING:
    from botkit.server.app import Server

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "botkit_console"
LOGIN_COOKIE = "botkit_console_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
#: The pages' policy: scripts and styles only from /console/static, no inline code.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}
SUMMARY_CHARS = 140
#: Failed logins allowed per minute, per client address and per username.
LOGIN_FAILURES_PER_MINUTE = 5
HUMAN_STATES = ("waiting_for_agent", "agent")
#: Larger ids cannot be in the database (64-bit) and would overflow a query's parameter.
MAX_ID = 2**63 - 1
STATE_LABELS = {
    "bot": "with the bot",
    "waiting_for_agent": "waiting for a person",
    "agent": "with an agent",
    "closed": "closed",
}

Access = str  # "public", "agent" or "operator"
Handler = Callable[[Request, "Visit"], Awaitable[Response]]


@dataclass(frozen=True)
class Visit:
    """A request from a logged-in console user."""

    user: ConsoleUserRecord
    session: ConsoleSession
    csrf: str

    @property
    def operator(self) -> bool:
        return self.user.role == "operator"


class _Refusal(Exception):
    """Answer ``response`` instead of running the handler."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _truncate(text: str | None, limit: int = SUMMARY_CHARS) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _utc(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _is_https(request: Request) -> bool:
    """Served over HTTPS: directly, or behind a proxy on this machine that says so."""
    if request.url.scheme in ("https", "wss"):
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and is_loopback(client_ip(request))


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a console path only (no open redirect)."""
    if (target and target.startswith(PREFIX) and not target.startswith("//")
            and "\\" not in target and target.split("?")[0] not in (f"{PREFIX}/login",)):
        return target
    return PREFIX


async def _read_form(request: Request, max_bytes: int) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as {name: first value}."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise HTTPProblem(413, "body_too_large",
                              f"the form is over the {max_bytes:,}-byte limit")
    try:
        parsed = parse_qs(body.decode("ascii"), keep_blank_values=True, max_num_fields=32,
                          strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise HTTPProblem(400, "invalid_form", "the form could not be read") from None
    return {key: values[0] for key, values in parsed.items() if values}


def _parse_date(value: str, what: str, errors: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append(f"{what} must be a date like 2026-01-31")
        return None


class Console:
    """The console of one server: its routes, the signer, the login throttles."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine = server.engine
        self.store = server.engine.store
        self._signer: CookieSigner | None = None
        self.queries = ConsoleQueries(self.store)
        self.ip_failures = FailureLimiter(LOGIN_FAILURES_PER_MINUTE, 60.0)
        self.user_failures = FailureLimiter(LOGIN_FAILURES_PER_MINUTE, 60.0)
        self._revoked: dict[str, int] = {}
        self._static: dict[str, tuple[bytes, str]] = {}
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("botkit.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["utc"] = _utc
        self.templates.globals["state_label"] = lambda state: STATE_LABELS.get(state, state)

    @property
    def signer(self) -> CookieSigner:
        """Made on first use, so an app that never serves the console writes no secret."""
        if self._signer is None:
            self._signer = CookieSigner(load_secret(self.server.config))
        return self._signer

    # -- routes ------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        api = f"{PREFIX}/api"
        table: list[tuple[str, Handler, Access, list[str], str]] = [
            # path, handler, who, methods, kind ("page" or "api")
            (PREFIX, self.queue_page, "agent", ["GET"], "page"),
            (f"{PREFIX}/logout", self.logout, "agent", ["POST"], "page"),
            (f"{PREFIX}/conversations/{{conversation_id:int}}", self.conversation_page,
             "agent", ["GET"], "page"),
            (f"{PREFIX}/browse", self.browse_page, "operator", ["GET"], "page"),
            (f"{PREFIX}/conversations/{{conversation_id:int}}/export", self.export,
             "operator", ["GET"], "page"),
            (f"{PREFIX}/users/forget", self.forget_page, "operator", ["GET"], "page"),
            (f"{PREFIX}/users/forget", self.forget, "operator", ["POST"], "page"),
            (f"{PREFIX}/adapters", self.adapters_page, "operator", ["GET"], "page"),
            (f"{api}/me", self.api_me, "agent", ["GET"], "api"),
            (f"{api}/queue", self.api_queue, "agent", ["GET"], "api"),
            (f"{api}/conversations/{{conversation_id:int}}", self.api_conversation, "agent",
             ["GET"], "api"),
            (f"{api}/conversations/{{conversation_id:int}}/claim", self.api_claim, "agent",
             ["POST"], "api"),
            (f"{api}/conversations/{{conversation_id:int}}/reply", self.api_reply, "agent",
             ["POST"], "api"),
            (f"{api}/conversations/{{conversation_id:int}}/hand-back", self.api_hand_back,
             "agent", ["POST"], "api"),
            (f"{api}/conversations/{{conversation_id:int}}/close", self.api_close, "agent",
             ["POST"], "api"),
        ]
        # Two routes on one path (GET page, POST action) are merged into one Route.
        merged: dict[str, dict[str, tuple[Handler, Access, str]]] = {}
        for path, handler, access, methods, kind in table:
            for method in methods:
                merged.setdefault(path, {})[method] = (handler, access, kind)
        routes: list[BaseRoute] = [
            Route(f"{PREFIX}/login", self._public(self.login_page), methods=["GET"]),
            Route(f"{PREFIX}/login", self._public(self.login), methods=["POST"]),
            Route(f"{PREFIX}/static/{{name}}", self._public(self.static), methods=["GET"]),
        ]
        for path, by_method in merged.items():
            for method, (handler, access, kind) in by_method.items():
                routes.append(Route(path, self._gate(handler, access, kind), methods=[method]))
        return routes

    def _public(self, handler: Callable[[Request], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refusal as refusal:
                return refusal.response
            except MemoryStoreError as exc:
                return self._unavailable(request, exc, "page")

        endpoint.console_access = "public"  # type: ignore[attr-defined]
        return endpoint

    def _gate(self, handler: Handler, access: Access, kind: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                visit = await self.visitor(request)
                if visit is None:
                    return self._anonymous(request, kind)
                if access == "operator" and not visit.operator:
                    return self._error(
                        request, kind, 403, "forbidden",
                        "This part of the console is for operators only.", visit=visit,
                    )
                if request.method not in ("GET", "HEAD"):
                    await self._check_csrf(request, visit, kind)
                return await handler(request, visit)
            except _Refusal as refusal:
                return refusal.response
            except HTTPProblem as problem:
                return self._error(request, kind, problem.status, problem.code,
                                   problem.message, headers=problem.headers, **problem.extra)
            except MemoryStoreError as exc:
                return self._unavailable(request, exc, kind)

        endpoint.console_access = access  # type: ignore[attr-defined]
        return endpoint

    # -- sessions ----------------------------------------------------------------------

    async def visitor(self, request: Request) -> Visit | None:
        """The logged-in user of ``request``, re-read from the database, or None."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        session = self.signer.check(cookie)
        if session is None or session.sid in self._revoked:
            return None
        user = await self.store.console_user(user_id=session.user_id)
        if user is None or user.disabled or not hmac.compare_digest(
            password_fingerprint(user.password_hash), session.fingerprint
        ):
            return None
        return Visit(user, session, self.signer.token("csrf", session.sid))

    async def _check_csrf(self, request: Request, visit: Visit, kind: str) -> None:
        token = request.headers.get(CSRF_HEADER)
        if token is None and kind == "page":
            form = await _read_form(request, self.server.config.server.max_body_bytes)
            request.state.form = form
            token = form.get(CSRF_FIELD)
        if not self.signer.check_token("csrf", visit.session.sid, token):
            log.warning("console: %s %s by %s without a valid CSRF token; refused",
                        request.method, request.url.path, visit.user.username)
            raise _Refusal(self._error(
                request, kind, 403, "csrf_failed",
                "This request did not carry the page's security token (CSRF). Reload the "
                "page and try again.", visit=visit,
            ))

    def _cookie_flags(self, request: Request) -> dict[str, Any]:
        return {"path": PREFIX, "httponly": True, "samesite": "Lax",
                "secure": _is_https(request)}

    def _revoke(self, session: ConsoleSession) -> None:
        now = time.time()
        for sid in [sid for sid, until in self._revoked.items() if until <= now]:
            del self._revoked[sid]
        self._revoked[session.sid] = session.expires_at

    # -- answers -----------------------------------------------------------------------

    def render(
        self, request: Request, template: str, visit: Visit | None = None, *,
        status: int = 200, headers: Mapping[str, str] | None = None, **context: Any,
    ) -> Response:
        page = self.templates.get_template(template).render(
            me=visit.user if visit else None,
            operator=bool(visit and visit.operator),
            csrf=visit.csrf if visit else "",
            prefix=PREFIX,
            path=request.url.path,
            **context,
        )
        return Response(page, status_code=status, media_type="text/html; charset=utf-8",
                        headers={
                            "Content-Security-Policy": CSP,
                            "X-Frame-Options": "DENY",
                            "Cache-Control": "no-store",
                            **(headers or {}),
                        })

    def _json(self, data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})

    def _error(
        self, request: Request, kind: str, status: int, code: str, message: str, *,
        visit: Visit | None = None, headers: Mapping[str, str] | None = None, **extra: Any,
    ) -> Response:
        if kind == "api":
            return JSONResponse(
                {"error": {"code": code, "message": message, **extra}}, status_code=status,
                headers={"Cache-Control": "no-store", **(headers or {})},
            )
        return self.render(request, "error.html", visit, status=status, headers=headers,
                           title=f"{status}", message=message)

    def _anonymous(self, request: Request, kind: str) -> Response:
        if kind == "api":
            return JSONResponse(
                {"error": {"code": "unauthorized",
                           "message": f"log in first (the session is missing or has expired): "
                                      f"{PREFIX}/login"}},
                status_code=401, headers={"Cache-Control": "no-store"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = PREFIX
        return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303,
                                headers={"Cache-Control": "no-store"})

    def _unavailable(self, request: Request, exc: Exception, kind: str) -> Response:
        log.error("console: database error on %s: %s", request.url.path, exc)
        return self._error(request, kind, 503, "unavailable",
                           "The conversation database is unavailable; try again shortly.",
                           headers={"Retry-After": "5"})

    # -- static files ------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            return JSONResponse({"error": {"code": "not_found", "message": "no such file"}},
                                status_code=404)
        if name not in self._static:
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._static[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        body, etag = self._static[name]
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=f"{media_type}; charset=utf-8", headers=headers)

    # -- logging in and out ------------------------------------------------------------

    def _login_nonce(self, request: Request) -> str | None:
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        return nonce if 16 <= len(nonce) <= 64 and nonce.isascii() and nonce.isalnum() else None

    def _login_form(
        self, request: Request, *, status: int = 200, error: str | None = None,
        username: str = "", headers: Mapping[str, str] | None = None,
    ) -> Response:
        nonce = self._login_nonce(request) or secrets.token_hex(16)
        response = self.render(
            request, "login.html", status=status, headers=headers, error=error,
            username=username, login_token=self.signer.token("login", nonce),
            next=_safe_next(request.query_params.get("next")),
        )
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, **self._cookie_flags(request))
        return response

    async def login_page(self, request: Request) -> Response:
        if await self.visitor(request) is not None:
            return RedirectResponse(_safe_next(request.query_params.get("next")),
                                    status_code=303)
        return self._login_form(request)

    async def login(self, request: Request) -> Response:
        try:
            form = await _read_form(request, self.server.config.server.max_body_bytes)
        except HTTPProblem as problem:
            return self._error(request, "page", problem.status, problem.code, problem.message)
        nonce = self._login_nonce(request)
        if nonce is None or not self.signer.check_token("login", nonce, form.get(CSRF_FIELD)):
            return self._login_form(
                request, status=403,
                error="The login form had expired (or cookies are off). Please try again.",
            )
        username = form.get("username", "").strip()[:64]
        password = form.get("password", "")
        ip = client_ip(request)
        wait = max(self.ip_failures.retry_after(ip),
                   self.user_failures.retry_after(username.lower()))
        if wait:
            seconds = max(1, int(wait + 0.999))
            log.warning("console: login for %r from %s refused: too many failed attempts",
                        username, ip)
            return self.render(
                request, "error.html", status=429, headers={"Retry-After": str(seconds)},
                title="Too many attempts",
                message=(f"Too many failed logins. For your account's safety, please wait "
                         f"{seconds} seconds and try again."),
                retry_link=f"{PREFIX}/login",
            )
        user = await self.store.console_user(username=username) if username else None
        ok = await asyncio.to_thread(
            verify_or_waste_time, password, user.password_hash if user else None
        )
        if user is None or not ok or user.disabled:
            self.ip_failures.failed(ip)
            self.user_failures.failed(username.lower())
            log.warning("console: failed login for %r from %s", username, ip)
            return self._login_form(request, status=401, username=username,
                                    error="Wrong username or password.")
        cookie, session = self.signer.issue(user.id, user.password_hash)
        log.info("console: %s (%s) logged in from %s", user.username, user.role, ip)
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303,
                                    headers={"Cache-Control": "no-store"})
        flags = self._cookie_flags(request)
        response.set_cookie(COOKIE, cookie, max_age=self.signer.ttl_s, **flags)
        response.delete_cookie(LOGIN_COOKIE, **flags)
        return response

    async def logout(self, request: Request, visit: Visit) -> Response:
        self._revoke(visit.session)
        log.info("console: %s logged out", visit.user.username)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, **self._cookie_flags(request))
        return response

    # -- conversations as JSON -----------------------------------------------------------

    async def _names(self, ids: set[int]) -> dict[int, str]:
        names: dict[int, str] = {}
        for agent_id in ids:
            found = await self.store.console_user(user_id=agent_id)
            if found is not None:
                names[agent_id] = found.name
        return names

    def _persona_name(self, name: str) -> str:
        persona = self.engine.personas.get(name)
        return persona.display_name if persona is not None else name

    def _permissions(self, visit: Visit, conversation: ConversationRecord) -> dict[str, bool]:
        mine = conversation.agent_id == visit.user.id
        state = conversation.state
        manage = visit.operator or mine or state == "waiting_for_agent"
        return {
            "claim": state in ("waiting_for_agent", "bot"),
            "reply": state == "agent" and (mine or visit.operator),
            "hand_back": state in HUMAN_STATES and manage,
            "close": state != "closed" and (manage or (visit.operator and state == "bot")),
        }

    async def _conversation_json(
        self, visit: Visit, conversation: ConversationRecord, names: dict[int, str] | None = None,
    ) -> dict[str, Any]:
        names = names if names is not None else {}
        if conversation.agent_id and conversation.agent_id not in names:
            names.update(await self._names({conversation.agent_id}))
        return {
            "id": conversation.id,
            "channel": conversation.channel,
            "persona": conversation.persona,
            "persona_name": self._persona_name(conversation.persona),
            "state": conversation.state,
            "state_label": STATE_LABELS.get(conversation.state, conversation.state),
            "agent": names.get(conversation.agent_id) if conversation.agent_id else None,
            "agent_is_me": conversation.agent_id == visit.user.id,
            "created_at": _iso(conversation.created_at),
            "updated_at": _iso(conversation.updated_at),
            "closed_at": _iso(conversation.closed_at),
            "can": self._permissions(visit, conversation),
        }

    def _message_json(
        self, message: MessageRecord, names: dict[int, str], scores: dict[int, int]
    ) -> dict[str, Any]:
        return {
            "id": message.id,
            "role": message.role,
            "text": message.text,
            "created_at": _iso(message.created_at),
            "feedback": scores.get(message.id),
            "interrupted": message.interrupted,
            "author": names.get(message.agent_id or 0, "Support team")
            if message.role == "agent" else None,
        }

    async def _load(self, request: Request, visit: Visit, kind: str) -> ConversationRecord:
        """The conversation of the path, if ``visit`` may see it (else 404 or 403)."""
        conversation_id = int(request.path_params["conversation_id"])
        conversation = (await self.store.get_conversation(conversation_id)
                        if conversation_id <= MAX_ID else None)
        if conversation is None:
            raise _Refusal(self._error(request, kind, 404, "not_found",
                                       f"There is no conversation {conversation_id}.",
                                       visit=visit))
        if not await self._may_see(visit, conversation):
            raise _Refusal(self._error(
                request, kind, 403, "forbidden",
                "Agents see conversations waiting for a person, taken by an agent, or that "
                "they took part in; ask an operator for this one.", visit=visit,
            ))
        return conversation

    async def _may_see(self, visit: Visit, conversation: ConversationRecord) -> bool:
        if visit.operator or conversation.state in HUMAN_STATES:
            return True
        if conversation.agent_id == visit.user.id:
            return True
        return await self.queries.agent_took_part(conversation.id, visit.user.username)

    # -- the queue -----------------------------------------------------------------------

    async def queue_page(self, request: Request, visit: Visit) -> Response:
        return self.render(request, "queue.html", visit, title="Queue")

    async def api_me(self, request: Request, visit: Visit) -> Response:
        user = visit.user
        return self._json({"username": user.username, "name": user.name, "role": user.role,
                           "csrf_token": visit.csrf})

    async def api_queue(self, request: Request, visit: Visit) -> Response:
        waiting = await self.store.handoff_queue(("waiting_for_agent",))
        taken = await self.store.handoff_queue(("agent",))
        names = await self._names({i.conversation.agent_id for i in taken
                                   if i.conversation.agent_id})
        now = datetime.now(UTC)

        def item(entry: Any) -> dict[str, Any]:
            conversation: ConversationRecord = entry.conversation
            return {
                "id": conversation.id,
                "channel": conversation.channel,
                "persona": conversation.persona,
                "persona_name": self._persona_name(conversation.persona),
                "state": conversation.state,
                "user_name": entry.user_name,
                "since": _iso(entry.since),
                "wait_s": max(0.0, (now - entry.since).total_seconds()),
                "summary": _truncate(entry.last_user_text),
                "agent": names.get(conversation.agent_id) if conversation.agent_id else None,
            }

        mine = [item(i) for i in taken if i.conversation.agent_id == visit.user.id]
        others = [item(i) for i in taken if i.conversation.agent_id != visit.user.id]
        return self._json({
            "waiting": [item(i) for i in waiting],
            "mine": mine,
            "others": others,
            "now": _iso(now),
        })

    # -- one conversation ------------------------------------------------------------------

    async def conversation_page(self, request: Request, visit: Visit) -> Response:
        conversation = await self._load(request, visit, "page")
        user = await self.queries.conversation_user(conversation.id)
        return self.render(
            request, "conversation.html", visit, title=f"Conversation {conversation.id}",
            conversation=conversation, user=user,
            persona_name=self._persona_name(conversation.persona),
        )

    async def api_conversation(self, request: Request, visit: Visit) -> Response:
        conversation = await self._load(request, visit, "api")
        after_raw = request.query_params.get("after", "0")
        if not (after_raw.isascii() and after_raw.isdigit() and len(after_raw) <= 18):
            raise HTTPProblem(400, "invalid_request", "after must be a message id (a number)")
        messages = await self.store.messages_after(conversation.id, int(after_raw))
        events = await self.store.state_events(conversation.id)
        scores = await self.queries.feedback_scores(conversation.id)
        names = await self._names({m.agent_id for m in messages if m.agent_id})
        user = await self.queries.conversation_user(conversation.id)
        return self._json({
            "conversation": await self._conversation_json(visit, conversation, names),
            "user": None if user is None else {
                "name": user.display_name, "channel": user.channel,
                "external_id": user.external_id,
            },
            "messages": [self._message_json(m, names, scores) for m in messages],
            "feedback": {str(k): v for k, v in scores.items()},
            "events": [
                {"from": e.from_state, "to": e.to_state, "actor": e.actor, "reason": e.reason,
                 "at": _iso(e.created_at)}
                for e in events
            ],
        })

    async def _conflict(self, exc: StateConflict, visit: Visit, doing: str) -> HTTPProblem:
        conversation = await self.store.get_conversation(exc.conversation_id)
        state = conversation.state if conversation is not None else "closed"
        owner = None
        if conversation is not None and conversation.agent_id:
            owner = (await self._names({conversation.agent_id})).get(conversation.agent_id)
        if state == "agent" and conversation is not None:
            who = "You have" if conversation.agent_id == visit.user.id else \
                f"{owner or 'Another agent'} has"
            message = f"{who} already taken this conversation over"
        elif state == "closed":
            message = "This conversation is closed"
        elif state == "bot":
            message = "The bot has this conversation (nobody is waiting for a person)"
        else:
            message = "This conversation is waiting for someone to claim it"
        return HTTPProblem(409, "state_conflict", f"{message}, so you cannot {doing} it.",
                           state=state, agent=owner)

    async def _act(
        self, request: Request, visit: Visit, doing: str,
        action: Callable[[ConversationRecord], Awaitable[Any]],
        *, owner_only: bool = False,
    ) -> Response:
        conversation = await self._load(request, visit, "api")
        if (owner_only and not visit.operator and conversation.state == "agent"
                and conversation.agent_id != visit.user.id):
            names = await self._names({conversation.agent_id or 0})
            owner = names.get(conversation.agent_id or 0, "another agent")
            raise HTTPProblem(
                409, "state_conflict",
                f"{owner} has taken this conversation over; only they or an operator can "
                f"{doing} it.", state=conversation.state, agent=owner,
            )
        try:
            result = await action(conversation)
        except StateConflict as exc:
            raise await self._conflict(exc, visit, doing) from None
        log.info("console: %s did %s on conversation %s", visit.user.username, doing,
                 conversation.id)
        updated = await self.store.get_conversation(conversation.id)
        body: dict[str, Any] = {
            "conversation": await self._conversation_json(visit, updated or conversation),
        }
        if isinstance(result, MessageRecord):
            body["message"] = self._message_json(result, {visit.user.id: visit.user.name}, {})
        return self._json(body, status=201 if isinstance(result, MessageRecord) else 200)

    async def api_claim(self, request: Request, visit: Visit) -> Response:
        return await self._act(
            request, visit, "claim", lambda c: self.engine.claim(c.id, visit.user)
        )

    async def api_reply(self, request: Request, visit: Visit) -> Response:
        body = await read_json(request, self.server.config.server.max_body_bytes)
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise HTTPProblem(400, "invalid_request", 'send {"text": "..."}', param="text")
        try:
            self.engine.check_input(text)
        except EmptyMessageError:
            raise HTTPProblem(400, "invalid_request", "The reply is empty.") from None
        except MessageTooLongError as exc:
            raise HTTPProblem(
                413, "message_too_long",
                f"The reply is {exc.length:,} characters long; the limit is {exc.limit:,}.",
                limit=exc.limit,
            ) from None
        return await self._act(
            request, visit, "reply to",
            lambda c: self.engine.agent_reply(c.id, visit.user, text), owner_only=True,
        )

    async def api_hand_back(self, request: Request, visit: Visit) -> Response:
        return await self._act(
            request, visit, "hand back", lambda c: self.engine.hand_back(c.id, visit.user),
            owner_only=True,
        )

    async def api_close(self, request: Request, visit: Visit) -> Response:
        async def close(conversation: ConversationRecord) -> Any:
            if conversation.state == "bot" and not visit.operator:
                raise StateConflict(conversation.id, "bot", "closed")
            return await self.engine.close(conversation.id, visit.user)

        return await self._act(request, visit, "close", close, owner_only=True)

    # -- operators: the conversation browser, exports, forgetting a user --------------------

    async def browse_page(self, request: Request, visit: Visit) -> Response:
        params = request.query_params
        errors: list[str] = []
        page_raw = params.get("page", "1")
        filters = Filters(
            user=params.get("user", "").strip()[:255],
            channel=params.get("channel", "").strip()[:64],
            persona=params.get("persona", "").strip()[:128],
            date_from=_parse_date(params.get("from", "").strip(), "From", errors),
            date_to=_parse_date(params.get("to", "").strip(), "To", errors),
            feedback=params.get("feedback", "") if params.get("feedback") in ("up", "down")
            else "",
            page=int(page_raw) if page_raw.isascii() and page_raw.isdigit()
            and 0 < int(page_raw) < 100_000 else 1,
        )
        if filters.date_from and filters.date_to and filters.date_from > filters.date_to:
            errors.append("From must not be after To")
        result = await self.queries.search(filters)
        channels, personas = await self.queries.choices()
        personas = sorted(set(personas) | set(self.engine.personas))
        query = {key: value for key, value in params.items() if key != "page" and value}
        return self.render(
            request, "browse.html", visit, title="Conversations", filters=filters,
            raw=params, errors=errors, result=result, channels=channels, personas=personas,
            page_link=lambda page: f"{PREFIX}/browse?{urlencode({**query, 'page': page})}",
            forget_link=lambda channel, external_id: f"{PREFIX}/users/forget?"
            + urlencode({"channel": channel, "external_id": external_id}),
        )

    async def export(self, request: Request, visit: Visit) -> Response:
        conversation_id = int(request.path_params["conversation_id"])
        data = (await self.queries.export_conversation(conversation_id)
                if conversation_id <= MAX_ID else None)
        if data is None:
            return self._error(request, "page", 404, "not_found",
                               f"There is no conversation {conversation_id}.", visit=visit)
        log.info("console: %s exported conversation %s", visit.user.username, conversation_id)
        return Response(
            json.dumps(data, indent=2, ensure_ascii=False) + "\n",
            media_type="application/json; charset=utf-8",
            headers={
                "Content-Disposition":
                    f'attachment; filename="conversation-{conversation_id}.json"',
                "Cache-Control": "no-store",
            },
        )

    async def forget_page(self, request: Request, visit: Visit) -> Response:
        channel = request.query_params.get("channel", "")
        external_id = request.query_params.get("external_id", "")
        footprint = (await self.queries.user_footprint(channel, external_id)
                     if channel and external_id else None)
        return self.render(
            request, "forget.html", visit, title="Forget a user", channel=channel,
            external_id=external_id, footprint=footprint, error=None,
            status=200 if footprint else 404,
        )

    async def forget(self, request: Request, visit: Visit) -> Response:
        form = getattr(request.state, "form", None)
        if form is None:
            form = await _read_form(request, self.server.config.server.max_body_bytes)
        channel = form.get("channel", "")
        external_id = form.get("external_id", "")
        if form.get("confirm") != "yes":
            footprint = await self.queries.user_footprint(channel, external_id)
            return self.render(
                request, "forget.html", visit, status=400, title="Forget a user",
                channel=channel, external_id=external_id, footprint=footprint,
                error="Tick the box to confirm that everything about this user is deleted.",
            )
        counts = await self.store.forget_user(channel, external_id)
        log.warning("console: operator %s forgot user %s on %s: %s", visit.user.username,
                    external_id, channel, counts)
        return self.render(request, "forgotten.html", visit, title="User forgotten",
                           channel=channel, external_id=external_id, counts=counts)

    # -- operators: LoRA adapters ------------------------------------------------------------

    async def adapters_page(self, request: Request, visit: Visit) -> Response:
        personas = list(self.engine.personas.values())
        entries = await asyncio.to_thread(lambda: [_adapter_info(p) for p in personas])
        return self.render(request, "adapters.html", visit, title="Adapters", entries=entries)


# -- adapter directories ---------------------------------------------------------------------

_MANIFEST_FIELDS = (
    ("base_model", "Base model"),
    ("base_source", "Base source"),
    ("method", "Method"),
    ("created_at", "Trained"),
    ("botkit_version", "botkit version"),
    ("device", "Device"),
    ("saved_dtype", "Saved as"),
)


def _read_json_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} cannot be read: {exc}"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and len(data) > 8:
        rows.append((prefix, f"[{len(data)} items]"))
    else:
        text = json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data
        rows.append((prefix, text if len(text) <= 300 else text[:299] + "…"))
    return rows


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def _adapter_info(persona: Any) -> dict[str, Any]:
    """What the adapters page shows of one persona's LoRA adapter directory."""
    info: dict[str, Any] = {
        "persona": persona.name, "display_name": persona.display_name,
        "path": str(persona.adapter) if persona.adapter else None, "exists": False,
        "summary": [], "manifest": [], "eval": None, "problems": [],
    }
    if persona.adapter is None:
        return info
    folder = Path(persona.adapter)
    info["exists"] = folder.is_dir()
    if not info["exists"]:
        info["problems"].append("the directory does not exist")
        return info
    manifest, problem = _read_json_file(folder / "botkit_manifest.json")
    if problem:
        info["problems"].append(problem)
    if manifest is not None:
        summary = [(label, str(manifest[key])) for key, label in _MANIFEST_FIELDS
                   if manifest.get(key) not in (None, "")]
        hyper = manifest.get("hyperparameters") or {}
        if isinstance(hyper, dict):
            parts = [f"{key} {hyper[key]}" for key in ("rank", "alpha", "epochs", "lr")
                     if key in hyper]
            if parts:
                summary.append(("Hyperparameters", ", ".join(parts)))
        data = manifest.get("data") or {}
        if isinstance(data, dict) and "train_dialogues" in data:
            summary.append(("Training dialogues",
                            f"{data.get('train_dialogues')} train, "
                            f"{data.get('valid_dialogues', '?')} validation"))
        metrics = manifest.get("metrics") or {}
        if isinstance(metrics, dict):
            for key, label in (("train_loss", "Train loss"), ("val_loss", "Validation loss")):
                value = _number(metrics.get(key))
                if value is not None:
                    summary.append((label, f"{value:.4f}"))
        info["summary"] = summary
        info["manifest"] = _flatten(manifest)
    evaluation, problem = _read_json_file(folder / "eval.json")
    if problem:
        info["problems"].append(problem)
    if evaluation is not None:
        variants = evaluation.get("variants") or {}
        rows = []
        if isinstance(variants, dict):
            for name, scores in variants.items():
                if isinstance(scores, dict):
                    accuracy = _number(scores.get("accuracy"))
                    rows.append({
                        "name": str(name), "correct": scores.get("correct"),
                        "total": scores.get("total"),
                        "accuracy": None if accuracy is None else f"{accuracy:.0%}",
                    })
        accuracy = _number(evaluation.get("accuracy"))
        results = evaluation.get("results")
        info["eval"] = {
            "accuracy": None if accuracy is None else f"{accuracy:.0%}",
            "questions_file": evaluation.get("questions_file"),
            "decoding": evaluation.get("decoding"),
            "model": evaluation.get("model"),
            "questions": len(results) if isinstance(results, list) else None,
            "variants": rows,
        }
    return info


__all__ = ["COOKIE", "CSP", "Console"]
