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
from botkit.console.persona_form import (
    FIELD_NAMES,
    FIELDS,
    MODES,
    draft_source,
    form_values,
    split_errors,
)
from botkit.console.queries import ConsoleQueries, Filters
from botkit.errors import (
    BotkitError,
    EmptyMessageError,
    GenerationError,
    MemoryStoreError,
    MessageTooLongError,
)
from botkit.memory import (
    ConsoleUserRecord,
    ConversationRecord,
    MessageRecord,
    PersonaVersionRecord,
    StateConflict,
)
from botkit.persona_versions import DraftError, PersonaEditor, diff, file_source, parse_draft
from botkit.personas import Persona
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
#: The longest comment kept with a published persona version.
COMMENT_CHARS = 500
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
        self.persona_editor = PersonaEditor(self.engine)
        self._publishing = asyncio.Lock()
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
            (f"{PREFIX}/personas", self.personas_page, "operator", ["GET"], "page"),
            (f"{PREFIX}/personas/{{name}}", self.persona_page, "operator", ["GET"], "page"),
            (f"{PREFIX}/personas/{{name}}", self.persona_publish, "operator", ["POST"], "page"),
            (f"{PREFIX}/personas/{{name}}/rollback", self.rollback_page, "operator", ["GET"],
             "page"),
            (f"{PREFIX}/personas/{{name}}/rollback", self.rollback, "operator", ["POST"],
             "page"),
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
            (f"{api}/personas/{{name}}/preview", self.api_persona_preview, "operator",
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


    # -- operators: personas -----------------------------------------------------------------

    def _persona(self, request: Request, visit: Visit, kind: str) -> Persona:
        """The persona of the path (else 404)."""
        name = request.path_params["name"]
        persona = self.engine.personas.get(name)
        if persona is None:
            raise _Refusal(self._error(request, kind, 404, "not_found",
                                       f"There is no persona {name!r}.", visit=visit))
        return persona

    async def _persona_state(self, persona: Persona) -> _PersonaState:
        versions = await self.persona_editor.history(persona.name)
        file_text = await asyncio.to_thread(file_source, persona)
        return _PersonaState(versions, file_text)

    async def personas_page(self, request: Request, visit: Visit) -> Response:
        latest = {r.persona: r for r in await self.store.latest_persona_versions()}
        rows = [{"persona": persona, "latest": latest.get(persona.name)}
                for persona in sorted(self.engine.personas.values(), key=lambda p: p.name)]
        return self.render(request, "personas.html", visit, title="Personas", rows=rows)

    async def persona_page(self, request: Request, visit: Visit) -> Response:
        persona = self._persona(request, visit, "page")
        params = request.query_params
        notice = None
        published = params.get("published", "")
        if published.isascii() and published.isdigit() and len(published) < 10:
            notice = f"Version {published} is live: the next replies use it."
            back = params.get("rolled_back", "")
            if back == "file":
                notice = f"Rolled back to the persona file, published as version {published}."
            elif back.isascii() and back.isdigit() and len(back) < 10:
                notice = f"Rolled back to version {back}, published again as version {published}."
        return await self._editor(request, visit, persona, notice=notice)

    async def _editor(
        self, request: Request, visit: Visit, persona: Persona, *, status: int = 200,
        mode: str = "", form: Mapping[str, str] | None = None,
        errors: Mapping[str, str] | None = None, problems: list[str] | None = None,
        notice: str | None = None, state: _PersonaState | None = None,
    ) -> Response:
        """The editor page; after a refused draft, with the operator's input kept."""
        state = state or await self._persona_state(persona)
        form = form or {}
        problems = list(problems or [])
        try:
            values = form_values(state.source)
        except DraftError as exc:
            values = dict.fromkeys(FIELD_NAMES, "")
            problems.append(f"The live TOML cannot be shown in the form ({exc}); edit the "
                            "whole TOML instead.")
        if mode == "fields":
            values = {name: form.get(name, value) for name, value in values.items()}
        return self.render(
            request, "persona.html", visit, status=status,
            title=f"Persona {persona.display_name}", persona=persona, fields=FIELDS,
            values=values, errors=errors or {}, problems=problems, mode=mode,
            source=form.get("source", state.source) if mode == "toml" else state.source,
            comment=form.get("comment", ""), state=state, history=_history(state),
            notice=notice,
        )

    async def persona_publish(self, request: Request, visit: Visit) -> Response:
        persona = self._persona(request, visit, "page")
        form = getattr(request.state, "form", None)
        if form is None:
            form = await _read_form(request, self.server.config.server.max_body_bytes)
        mode = form.get("mode", "")
        if mode not in MODES:
            return await self._editor(request, visit, persona, status=400, problems=[
                "This form is not one of the editor's; reload the page and try again."])
        comment = " ".join(form.get("comment", "").split())[:COMMENT_CHARS] or None
        name = persona.name
        async with self._publishing:
            state = await self._persona_state(persona)
            if form.get("base_version") != str(state.version):
                latest = state.latest
                who = (f"{latest.author} published version {latest.version}" if latest
                       else "The persona was rolled back to its file")
                return await self._editor(
                    request, visit, persona, status=409, mode=mode, form=form, state=state,
                    problems=[f"{who} after you opened this page, so nothing was published. "
                              "Your edit is kept below: check the history, then publish "
                              "again to replace that version."],
                )
            try:
                source = draft_source(form, state.source)
                draft = parse_draft(source, name=name, base=persona)
                if source == state.source or (mode == "fields"
                                              and draft == self.engine.persona(name)):
                    return await self._editor(
                        request, visit, persona, status=400, mode=mode, form=form,
                        state=state, problems=["Nothing changed: the draft is the live "
                                               "persona, so there is nothing to publish."],
                    )
                record = await self.persona_editor.publish(
                    name, source, author=visit.user.username, comment=comment
                )
            except DraftError as exc:
                beside, top = split_errors(exc.fields, mode)
                return await self._editor(request, visit, persona, status=400, mode=mode,
                                          form=form, state=state, errors=beside, problems=top)
            except MemoryStoreError:
                raise
            except BotkitError as exc:  # e.g. a new adapter that does not load
                log.warning("console: persona %s not published: %s", name, exc)
                return await self._editor(request, visit, persona, status=400, mode=mode,
                                          form=form, state=state,
                                          problems=[f"Nothing was published: {exc}"])
        log.info("console: operator %s published persona %s version %d", visit.user.username,
                 name, record.version)
        return RedirectResponse(f"{PREFIX}/personas/{name}?published={record.version}",
                                status_code=303, headers={"Cache-Control": "no-store"})

    def _rollback_target(
        self, request: Request, visit: Visit, state: _PersonaState, raw: str
    ) -> _Target:
        if raw == "file":
            return _Target("file", "the persona file", state.file_text, None)
        for record in state.versions:
            if raw == str(record.version):
                return _Target(raw, f"version {raw}", record.source, record)
        raise _Refusal(self._error(request, "page", 404, "not_found",
                                   f"This persona has no version {raw[:20]!r}.", visit=visit))

    def _rollback_form(
        self, request: Request, visit: Visit, persona: Persona, state: _PersonaState,
        target: _Target, *, status: int = 200, error: str | None = None,
    ) -> Response:
        live = "file" if state.latest is None else f"version {state.version}"
        return self.render(
            request, "rollback.html", visit, status=status,
            title=f"Roll {persona.display_name} back", persona=persona, target=target,
            live=target.source == state.source, error=error,
            changes=_diff_lines(diff(state.source, target.source, old_label=f"live ({live})",
                                     new_label=target.label)),
        )

    async def rollback_page(self, request: Request, visit: Visit) -> Response:
        persona = self._persona(request, visit, "page")
        state = await self._persona_state(persona)
        target = self._rollback_target(request, visit, state,
                                       request.query_params.get("version", ""))
        return self._rollback_form(request, visit, persona, state, target)

    async def rollback(self, request: Request, visit: Visit) -> Response:
        persona = self._persona(request, visit, "page")
        form = getattr(request.state, "form", None)
        if form is None:
            form = await _read_form(request, self.server.config.server.max_body_bytes)
        async with self._publishing:
            state = await self._persona_state(persona)
            target = self._rollback_target(request, visit, state, form.get("version", ""))
            if form.get("confirm") != "yes":
                return self._rollback_form(request, visit, persona, state, target, status=400,
                                           error="Confirm with the button to roll back.")
            if target.source == state.source:
                return self._rollback_form(request, visit, persona, state, target, status=400,
                                           error=f"{target.label.capitalize()} is what is live "
                                                 "already; nothing was changed.")
            author = visit.user.username
            try:
                if target.record is not None:
                    record = await self.persona_editor.rollback(
                        persona.name, target.record.version, author=author
                    )
                else:
                    record = await self.persona_editor.publish(
                        persona.name, state.file_text, author=author,
                        comment="rollback to the file",
                    )
            except MemoryStoreError:
                raise
            except BotkitError as exc:  # the version no longer loads (an adapter gone...)
                log.warning("console: persona %s not rolled back: %s", persona.name, exc)
                return self._rollback_form(request, visit, persona, state, target, status=400,
                                           error=f"Nothing was changed: {exc}")
        log.info("console: operator %s rolled persona %s back to %s (version %d)", author,
                 persona.name, target.label, record.version)
        query = urlencode({"published": record.version, "rolled_back": target.key})
        return RedirectResponse(f"{PREFIX}/personas/{persona.name}?{query}", status_code=303,
                                headers={"Cache-Control": "no-store"})

    async def api_persona_preview(self, request: Request, visit: Visit) -> Response:
        persona = self._persona(request, visit, "api")
        body = await read_json(request, self.server.config.server.max_body_bytes)
        form = body.get("form") if isinstance(body, dict) else None
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(form, dict) or not isinstance(text, str):
            raise HTTPProblem(400, "invalid_request",
                              'send {"form": {the editor\'s fields}, "text": "a test message"}')
        try:
            text = self.engine.check_input(text)
        except EmptyMessageError:
            raise HTTPProblem(400, "invalid_request", "Type a test message first.",
                              param="text") from None
        except MessageTooLongError as exc:
            raise HTTPProblem(
                413, "message_too_long",
                f"The test message is {exc.length:,} characters long; the limit is "
                f"{exc.limit:,}.", limit=exc.limit,
            ) from None
        state = await self._persona_state(persona)
        mode = form.get("mode") if form.get("mode") in MODES else "toml"
        try:
            reply = await self.persona_editor.preview(
                persona.name, draft_source(form, state.source), text
            )
        except DraftError as exc:
            beside, top = split_errors(exc.fields, str(mode))
            raise HTTPProblem(
                400, "invalid_draft",
                "The draft is not a valid persona: " + "; ".join([*beside.values(), *top]),
                fields=beside, problems=top,
            ) from None
        except TimeoutError:
            raise HTTPProblem(504, "timeout",
                              "The model took too long to answer the preview.") from None
        except GenerationError as exc:
            raise HTTPProblem(503, "generation_failed",
                              f"The model could not answer the preview: {exc}") from None
        except MemoryStoreError:
            raise
        except BotkitError as exc:
            raise HTTPProblem(400, "invalid_draft",
                              f"The draft cannot be previewed: {exc}") from None
        log.info("console: operator %s previewed a draft of persona %s", visit.user.username,
                 persona.name)
        return self._json({"reply": reply, "persona": persona.name,
                           "display_name": persona.display_name})


@dataclass(frozen=True)
class _PersonaState:
    """A persona's published versions (newest first) and its file's TOML."""

    versions: list[PersonaVersionRecord]
    file_text: str

    @property
    def latest(self) -> PersonaVersionRecord | None:
        return self.versions[0] if self.versions else None

    @property
    def version(self) -> int:
        """The live version's number; 0 while the file is live."""
        return self.versions[0].version if self.versions else 0

    @property
    def source(self) -> str:
        """The live TOML."""
        return self.versions[0].source if self.versions else self.file_text


@dataclass(frozen=True)
class _Target:
    """What a rollback goes back to: a version, or the file (``key`` "file")."""

    key: str
    label: str
    source: str
    record: PersonaVersionRecord | None


def _diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) for the page to colour: add, del, hunk, meta, same."""
    lines: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith(("+++", "---")):
            kind = "meta"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append((kind, line))
    return lines


def _history(state: _PersonaState) -> list[dict[str, Any]]:
    """Each published version, newest first, with its changes from the one before (the
    oldest: from the file)."""
    entries: list[dict[str, Any]] = []
    for index, record in enumerate(state.versions):
        before = state.versions[index + 1] if index + 1 < len(state.versions) else None
        old_label = f"version {before.version}" if before else "file"
        changes = diff(before.source if before else state.file_text, record.source,
                       old_label=old_label, new_label=f"version {record.version}")
        entries.append({"record": record, "live": index == 0, "old_label": old_label,
                        "changes": _diff_lines(changes),
                        "same_as_live": record.source == state.source})
    return entries


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
