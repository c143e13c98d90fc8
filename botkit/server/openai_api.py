"""An OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Existing clients and tools work unchanged. ``model`` names a persona (``pine``: its
system prompt, sampling settings and LoRA adapter) or ``<persona>/base`` for the same
persona without its adapter. The persona's system prompt is used when the request has
no system (or developer) message. The API is stateless, like OpenAI's: nothing is
stored in conversation memory, the turn is only logged (without its text) and counted.

Keys come from ``BOTKIT_API_KEYS`` (comma-separated). Without keys the API answers only
when the server is bound to loopback; errors use OpenAI's JSON error shape.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from botkit.engine import clean_text, turn_log
from botkit.errors import GenerationTimeout, GeneratorBusy
from botkit.generation import ChatMessage, GenerationRequest
from botkit.server.http import HTTPProblem, read_json

if TYPE_CHECKING:
    from botkit.personas import Persona
    from botkit.server.app import Server

log = logging.getLogger(__name__)
CHANNEL = "openai"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call")


class APIError(Exception):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def routes() -> Sequence[BaseRoute]:
    return [
        Route("/v1/chat/completions", _chat_completions, methods=["POST"]),
        Route("/v1/models", _models, methods=["GET"]),
        Route("/v1/models/{model:path}", _model, methods=["GET"]),
    ]


def _authorize(request: Request, server: Server) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip() if scheme.lower() == "bearer" else ""
    if not server.api_keys:
        if server.loopback_only:
            return
        raise APIError(
            401, "this server listens beyond loopback, so the API needs keys: set "
            "BOTKIT_API_KEYS (comma-separated) and send one as a Bearer token",
            type="authentication_error", code="invalid_api_key",
        )
    # Compare against every key so the time taken does not tell which one nearly matched.
    matched = False
    for candidate in server.api_keys:
        matched |= hmac.compare_digest(key.encode(), candidate.encode())
    if not matched:
        raise APIError(
            401, "Incorrect API key provided." if key else
            "No API key provided: send 'Authorization: Bearer <key>'.",
            type="authentication_error", code="invalid_api_key",
        )


def _model_ids(server: Server) -> list[str]:
    ids: list[str] = []
    for name in sorted(server.engine.personas):
        ids.append(name)
        if name in server.engine._adapter_versions:
            ids.append(f"{name}/base")
    return ids


def _resolve_model(server: Server, model: Any) -> tuple[Persona, str | None]:
    """The persona and the generator adapter (None: the base model) that ``model`` names."""
    if not isinstance(model, str) or not model:
        raise APIError(400, "'model' is required: a persona name such as "
                       f"{server.engine.default_persona!r}", param="model")
    name, _, variant = model.partition("/")
    engine = server.engine
    if name not in engine.personas:
        raise APIError(
            404, f"The model '{model}' does not exist. Models here: "
            f"{', '.join(_model_ids(server))}.", param="model", code="model_not_found",
        )
    persona = engine.persona(name)
    version = engine._adapter_versions.get(persona.name)
    if not variant:
        return persona, persona.name if version else None
    if variant == "base":
        return persona, None
    if version is not None and variant in (version, persona.adapter and persona.adapter.name):
        return persona, persona.name
    raise APIError(404, f"The model '{model}' does not exist. Models here: "
                   f"{', '.join(_model_ids(server))}.", param="model", code="model_not_found")


async def _models(request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        _authorize(request, server)
    except APIError as exc:
        return exc.response()
    created = int(time.time())
    return JSONResponse({"object": "list", "data": [
        {"id": model_id, "object": "model", "created": created, "owned_by": "botkit"}
        for model_id in _model_ids(server)
    ]})


async def _model(request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        _authorize(request, server)
        model_id = request.path_params["model"]
        _resolve_model(server, model_id)
    except APIError as exc:
        return exc.response()
    return JSONResponse({"id": model_id, "object": "model", "created": int(time.time()),
                         "owned_by": "botkit"})


@dataclass
class _Call:
    persona: Persona
    model: str
    request: GenerationRequest
    stream: bool
    include_usage: bool
    prompt_tokens: int
    max_tokens: int


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise APIError(400, f"'{key}' must be a number from {low:g} to {high:g}", param=key)
    return float(value)


def _content(value: Any, index: int) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        parts: list[str] = []
        for part in value:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(
                part.get("text"), str
            ):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise APIError(400, f"messages[{index}]: content parts of type {kind!r} are "
                               "not supported (text only)", param=f"messages[{index}].content")
        return "".join(parts)
    raise APIError(400, f"messages[{index}].content must be a string or a list of text parts",
                   param=f"messages[{index}].content")


def _parse(body: Any, server: Server) -> _Call:
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    persona, adapter = _resolve_model(server, body.get("model"))
    for key in _UNSUPPORTED:
        if body.get(key):
            raise APIError(400, f"'{key}' is not supported by this server", param=key)
    if body.get("n") not in (None, 1):
        raise APIError(400, "only n=1 is supported", param="n")
    if body.get("logprobs"):
        raise APIError(400, "logprobs are not supported", param="logprobs")

    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    messages: list[ChatMessage] = []
    for index, item in enumerate(raw_messages):
        if not isinstance(item, dict) or item.get("role") not in _ROLES:
            raise APIError(
                400, f"messages[{index}].role must be one of {', '.join(_ROLES)}",
                param=f"messages[{index}].role",
            )
        text = clean_text(_content(item.get("content"), index))
        messages.append(ChatMessage(_ROLES[item["role"]], text))  # type: ignore[arg-type]
    if messages[-1].role != "user":
        raise APIError(400, "the last message must be from the user", param="messages")
    if not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", persona.system_prompt))
    if not messages[-1].content:
        raise APIError(400, "the last user message is empty", param="messages")
    longest = server.engine.max_message_chars
    for index, message in enumerate(messages):
        if message.role == "user" and len(message.content) > longest:
            raise APIError(400, f"messages[{index}] is {len(message.content):,} characters; "
                           f"the limit is {longest:,}", param="messages",
                           code="message_too_long")

    sampling = persona.generation.sampling()
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    if temperature is not None:
        sampling = replace(sampling, temperature=temperature)
    if top_p is not None:
        sampling = replace(sampling, top_p=max(top_p, 1e-6))
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise APIError(400, "'seed' must be an integer", param="seed")
        sampling = replace(sampling, seed=seed)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > 4 or not all(
            isinstance(s, str) and s for s in stops
        ):
            raise APIError(400, "'stop' must be a string or a list of up to 4 non-empty "
                           "strings", param="stop")
        sampling = replace(sampling, stop=tuple(dict.fromkeys((*sampling.stop, *stops))))

    generator = server.engine.generator
    prompt_tokens = generator.count_tokens(messages)
    window = generator.context_window
    limit_key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = body.get(limit_key)
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int)
                              or asked < 1):
        raise APIError(400, f"'{limit_key}' must be a positive integer", param=limit_key)
    if prompt_tokens >= window:
        raise APIError(
            400, f"This model's maximum context length is {window} tokens. However, your "
            f"messages resulted in {prompt_tokens} tokens.", param="messages",
            code="context_length_exceeded",
        )
    max_tokens = min(asked or sampling.max_new_tokens, window - prompt_tokens)
    sampling = replace(sampling, max_new_tokens=max_tokens)

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object", param="stream_options")
    return _Call(
        persona=persona,
        model=body["model"],
        request=GenerationRequest(
            messages=tuple(messages), sampling=sampling, adapter=adapter,
            request_id=secrets.token_hex(8),
        ),
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
    )


class StopCutter:
    """Cuts streamed text at the first stop string, holding back what might start one.

    ``feed(piece)`` returns the text that is safe to send now; ``stopped`` turns True
    once a stop string is seen (everything after it is dropped); ``flush()`` returns
    what was held back when the stream ends without a stop.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        if not self.stops:
            out, self.buffer = self.buffer, ""
            return out
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.buffer)), 0, -1):
                if self.buffer.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        cut = len(self.buffer) - hold
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


class _Completion:
    """One generation, cut at stop strings, counted and logged."""

    def __init__(self, server: Server, call: _Call) -> None:
        self.server = server
        self.call = call
        self.id = "chatcmpl-" + secrets.token_urlsafe(18)
        self.created = int(time.time())
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self.text = ""
        self.cutter = StopCutter(call.request.sampling.stop)
        self.pieces = server.engine.generator.stream(call.request)
        self.first: str | None = None
        self.outcome = "error"
        self.cut_by_length = False

    async def _next(self) -> str:
        timeout = self.server.engine.generation_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await anext(self.pieces)
        except TimeoutError:
            raise GenerationTimeout(f"the model produced nothing for {timeout:g} s") from None

    async def start(self) -> None:
        """Wait for the first piece, so that a busy model is an HTTP 503, not a broken stream."""
        try:
            self.first = await self._next()
        except StopAsyncIteration:
            self.first = ""
        self.first_token_s = time.perf_counter() - self.started

    async def texts(self) -> AsyncIterator[str]:
        """The reply's text pieces after stop-string cutting."""
        assert self.first is not None, "start() first"
        piece: str | None = self.first
        while piece is not None:
            out = self.cutter.feed(piece)
            if out:
                self.text += out
                yield out
            if self.cutter.stopped:
                break
            if self.completion_tokens >= self.call.max_tokens:
                # The generator should have stopped; a piece-granular cap keeps any
                # generator (or a scripted one) within the client's max_tokens.
                self.cut_by_length = True
                self.cutter.stopped = True
                break
            try:
                piece = await self._next()
            except StopAsyncIteration:
                piece = None
        tail = self.cutter.flush()
        if tail:
            self.text += tail
            yield tail
        self.outcome = "ok"

    @property
    def completion_tokens(self) -> int:
        return self.server.engine.generator.count_text(self.text) if self.text else 0

    @property
    def finish_reason(self) -> str:
        if self.cut_by_length:
            return "length"
        if self.cutter.stopped:
            return "stop"
        return "length" if self.completion_tokens >= self.call.max_tokens else "stop"

    def usage(self) -> dict[str, int]:
        completion = self.completion_tokens
        return {"prompt_tokens": self.call.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.call.prompt_tokens + completion}

    async def close(self, outcome: str | None = None) -> None:
        await self.pieces.aclose()  # type: ignore[attr-defined]
        outcome = outcome or self.outcome
        duration = time.perf_counter() - self.started
        self.server.metrics.observe_reply(
            CHANNEL, outcome, first_token_s=self.first_token_s,
            duration_s=duration, tokens=self.completion_tokens,
        )
        if outcome != "ok":
            self.server.metrics.errors.labels(CHANNEL, outcome).inc()
        if turn_log.isEnabledFor(logging.INFO):
            fields: dict[str, object] = {
                "event": "turn", "status": outcome, "channel": CHANNEL,
                "conversation_id": None, "request_id": self.call.request.request_id,
                "persona": self.call.persona.name, "model": self.call.model,
                "prompt_tokens": self.call.prompt_tokens,
                "reply_tokens": self.completion_tokens,
                "ttft_ms": None if self.first_token_s is None
                else round(self.first_token_s * 1000, 1),
                "reply_ms": round(duration * 1000, 1),
            }
            if turn_log.isEnabledFor(logging.DEBUG):
                fields["reply_text"] = self.text
            turn_log.info(json.dumps(fields, ensure_ascii=False), extra={"turn": fields})

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.call.model, "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
        }
        return _sse(body)


def _sse(body: Any) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def _chat_completions(request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        _authorize(request, server)
        try:
            body = await read_json(request, server.config.server.max_body_bytes)
        except HTTPProblem as exc:
            raise APIError(exc.status, exc.message, code=exc.code) from None
        call = _parse(body, server)
        completion = _Completion(server, call)
        try:
            await completion.start()
        except GeneratorBusy:
            await completion.close("busy")
            raise APIError(503, "The model is busy; retry shortly.", type="server_error",
                           code="overloaded", headers={"Retry-After": "2"}) from None
        except GenerationTimeout as exc:
            await completion.close("timeout")
            raise APIError(504, str(exc), type="server_error", code="timeout") from None
        except BaseException:
            await completion.close("error")
            raise
    except APIError as exc:
        return exc.response()

    if call.stream:
        return StreamingResponse(_stream(server, completion), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})
    try:
        async for _ in completion.texts():
            pass
    except GenerationTimeout as exc:
        await completion.close("timeout")
        return APIError(504, str(exc), type="server_error", code="timeout").response()
    except BaseException:
        await completion.close("cancelled")
        raise
    await completion.close()
    return JSONResponse({
        "id": completion.id, "object": "chat.completion", "created": completion.created,
        "model": call.model, "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": completion.text, "refusal": None},
            "logprobs": None,
            "finish_reason": completion.finish_reason,
        }],
        "usage": completion.usage(),
    })


async def _stream(server: Server, completion: _Completion) -> AsyncIterator[bytes]:
    active = server.metrics.active_streams.labels(CHANNEL)
    active.inc()
    outcome: str | None = None
    try:
        yield completion.chunk({"role": "assistant", "content": ""})
        try:
            async for text in completion.texts():
                yield completion.chunk({"content": text})
        except GenerationTimeout as exc:
            outcome = "timeout"
            yield _sse(APIError(504, str(exc), type="server_error", code="timeout").body())
            return
        except Exception:
            outcome = "error"
            log.exception("openai: completion %s failed", completion.id)
            yield _sse(APIError(500, "The reply failed.", type="server_error").body())
            return
        yield completion.chunk({}, completion.finish_reason)
        if completion.call.include_usage:
            yield _sse({
                "id": completion.id, "object": "chat.completion.chunk",
                "created": completion.created, "model": completion.call.model,
                "system_fingerprint": None, "choices": [], "usage": completion.usage(),
            })
        yield b"data: [DONE]\n\n"
    except BaseException:
        outcome = outcome or "cancelled"
        raise
    finally:
        active.dec()
        await completion.close(outcome)
