"""``botkit bench web``: what the web widget's HTTP path adds to a reply, under load.

Two contenders, one after the other in the same run, each driven by ``--users``
simulated users in a closed loop for ``--duration`` seconds (a user sends a message,
reads the whole reply, pauses ``--think-s``, sends the next):

1. ``direct`` (the baseline): the users call ``engine.respond()`` in this process;
2. ``web``: the users speak the widget's protocol (``adapters/web/PROTOCOL.md``) to a
   real ``botkit serve`` (uvicorn, the web adapter) on 127.0.0.1: ``POST
   /widget/api/sessions`` once, then per message ``POST /widget/api/messages`` and
   ``GET /widget/api/turns/{id}/events`` (server-sent events).

Both get a fresh engine on a fresh SQLite file with the same generator: the scripted
generator streaming ``--reply-words`` words at ``--token-rate`` words per second
(default), or the real model of the config (``--model real``). Time to first token is
measured from just before sending the message (``respond()`` / the POST) to the first
piece of text (the first ``event: delta``); the full reply ends at the end of the
stream (``event: done``, sent once the reply is stored). Users start evenly over a
``--warmup`` period and keep going for as long again after the measured window;
only messages sent inside the window are counted, errors are counted over the whole run.

The server runs in a child process by default (``--server process``): its own
interpreter, as ``botkit serve`` runs in production, so the clients' HTTP parsing is
not charged to the server's event loop; ``--server thread`` runs it in a thread of
this process instead (its own event loop, the same interpreter lock as the clients).
Each user holds one keep-alive connection, as a browser tab does, spoken over asyncio
streams in a few lines (``--client raw``): a general client costs the load generator
more CPU, and ``--client httpx`` (one shared ``httpx.AsyncClient``, whose pool does work
per request that grows with the number of connections) measured its own queueing
rather than the server's at 200 users on 2 cores.

Progress goes to stderr, the table to stdout, everything to ``--json FILE``::

    botkit bench web --json web.json
    botkit bench web --model real --users 8

This module imports only the standard library at import time (the CLI builds its
parser from :func:`add_arguments`); the server, the engine (and httpx, with
``--client httpx``) come with :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CONTENDERS = ("direct", "web")
LABELS = {
    "direct": "engine.respond() directly",
    "web": "web widget, HTTP + SSE",
}
BASELINE_LABEL = ("engine.respond() called directly in this process by the same number "
                  "of simulated users, same generator, fresh SQLite file")
CLIENTS = {
    "raw": "one keep-alive HTTP/1.1 connection per user on asyncio streams",
    "httpx": "one shared httpx.AsyncClient (connection pool) for all users",
}
TARGET_ADDED_TTFT_P95_MS = 50.0
TARGET_USERS = 200
DEFAULT_USERS = {"scripted": 200, "real": 8}
#: The web adapter's rate limits, raised so that the benchmark measures speed, not limits.
WEB_LIMITS = {
    "session_messages_per_minute": 100_000,
    "ip_messages_per_minute": 1e9,
    "ip_sessions_per_minute": 1e9,
}
REPO_ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = (
    "Where is my order? I placed it last week.",
    "Do you ship to Canada, and how long does it take?",
    "Can I return a tent I have already used once?",
    "What is the warranty on your sleeping bags?",
    "How do I change the delivery address of an order?",
    "Is the waterproof jacket true to size?",
)
REPLY_WORDS = (
    "Thanks for reaching out! Your order left our warehouse yesterday and should reach "
    "you within three to five business days. You will get a tracking link by email as "
    "soon as the carrier scans the parcel, and you can reply here at any time if "
    "something looks wrong or you would like to change the delivery address."
).split()
_READY, _STATS, _STOP = "BENCH-WEB-READY", "BENCH-WEB-STATS", "STOP"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--users", type=int, metavar="N",
                        help="concurrent simulated users (default 200 with the scripted "
                             "generator, 8 with the real model)")
    parser.add_argument("--duration", type=float, default=20.0, metavar="S",
                        help="measured seconds of load per contender (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, metavar="S",
                        help="users start evenly over this many seconds, and the load goes "
                             "on as long after the measured window; neither is counted "
                             "(default 3)")
    parser.add_argument("--model", choices=("scripted", "real"), default="scripted",
                        help="scripted: the scripted generator at --token-rate (default); "
                             "real: the model of the config (slow on CPU: use few users)")
    parser.add_argument("--token-rate", type=float, default=20.0, metavar="R",
                        help="words (tokens) per second of each scripted reply (default 20)")
    parser.add_argument("--reply-words", type=int, default=30, metavar="N",
                        help="words in each scripted reply (default 30)")
    parser.add_argument("--think-s", type=float, default=0.5, metavar="S",
                        help="a user's pause between a reply and their next message "
                             "(default 0.5)")
    parser.add_argument("--server", choices=("process", "thread"), default="process",
                        help="where uvicorn runs: a child process (default, as in "
                             "production) or a thread of this process with its own loop")
    parser.add_argument("--client", choices=tuple(CLIENTS), default="raw",
                        help="the simulated users' HTTP client: raw (default: one keep-alive "
                             "connection per user, as a browser tab; the least CPU) or httpx "
                             "(one shared httpx.AsyncClient; its pool costs CPU per request "
                             "that grows with the number of connections)")
    parser.add_argument("--skip", choices=CONTENDERS, action="append", default=[],
                        help="leave a contender out (repeatable)")
    if "--config" not in parser._option_string_actions:
        parser.add_argument("--config", metavar="FILE",
                            help="config TOML file: the model (--model real) and [memory] "
                                 "SQLite settings (default: $BOTKIT_CONFIG, else built-in "
                                 "defaults); the database is always a fresh temporary file")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    return parser


def progress(message: str) -> None:
    print(f"[bench web {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every contender runs; the same for both."""

    users: int
    duration_s: float
    warmup_s: float
    model: str
    token_rate: float
    reply_words: int
    think_s: float
    config_path: str | None

    @property
    def message_timeout_s(self) -> float:
        return 120.0 if self.model == "scripted" else 600.0

    def spec(self, workdir: Path) -> dict[str, Any]:
        """What builds an engine (in this process or in the server's child process)."""
        return {"model": self.model, "token_rate": self.token_rate,
                "reply_words": self.reply_words, "config": self.config_path,
                "workdir": str(workdir)}


def reply_text(words: int) -> str:
    out = [REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(max(1, words))]
    return " ".join(out)


def question(user: int, index: int) -> str:
    return f"{QUESTIONS[(user + index) % len(QUESTIONS)]} (#{index})"


def _bench_config(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(config of the engine, config of the server): a fresh SQLite file in ``workdir``."""
    from dataclasses import replace

    from botkit.config import load_config

    workdir = Path(spec["workdir"])
    config = load_config(spec["config"])
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    bot = config.bot
    if spec["model"] == "scripted":
        from botkit.testing import write_test_personas

        bot = replace(bot, data_dir=str(workdir),
                      personas_dir=str(write_test_personas(workdir / "personas")),
                      default_persona="pine")
    elif not Path(bot.personas_dir).is_dir() and (REPO_ROOT / bot.personas_dir).is_dir():
        bot = replace(bot, personas_dir=str(REPO_ROOT / bot.personas_dir))
    engine_config = replace(config, bot=bot, memory=replace(config.memory, url=db_url),
                            adapters={"web": dict(WEB_LIMITS)})
    # The widget's session secret goes in the temporary folder, never in the user's data.
    server_config = replace(engine_config, bot=replace(bot, data_dir=str(workdir)))
    return engine_config, server_config


@asynccontextmanager
async def open_bench_engine(spec: dict[str, Any]) -> AsyncIterator[tuple[Any, Any]]:
    """``(engine, server config)`` on a fresh database; closed on exit."""
    from botkit.app import open_engine

    engine_config, server_config = _bench_config(spec)
    generator = None
    if spec["model"] == "scripted":
        from botkit.testing import ScriptedGenerator

        generator = ScriptedGenerator(default=reply_text(spec["reply_words"]),
                                      delay_s=1.0 / spec["token_rate"])
    async with open_engine(engine_config, generator=generator) as engine:
        yield engine, server_config


# -- measuring -------------------------------------------------------------------------


@dataclass
class Sample:
    """One message: when it was sent (monotonic), its timings, its error if any."""

    sent: float
    ttft_s: float | None = None
    reply_s: float | None = None
    pieces: int = 0
    error: str | None = None
    posted_s: float | None = None
    """web: when the POST's answer arrived."""
    stream_open_s: float | None = None
    """web: when the event stream's response headers arrived."""


@dataclass
class Phase:
    """The times of one contender's run (monotonic clock, shared by both processes)."""

    start: float
    window_start: float
    window_end: float
    stop: float

    @classmethod
    def plan(cls, plan: Plan, delay_s: float = 0.2) -> Phase:
        start = time.monotonic() + delay_s
        window_start = start + plan.warmup_s
        window_end = window_start + plan.duration_s
        return cls(start, window_start, window_end, window_end + plan.warmup_s)

    def counted(self, sample: Sample) -> bool:
        return self.window_start <= sample.sent < self.window_end

    def user_start(self, user: int, users: int) -> float:
        return self.start + self.warmup_span * user / max(1, users)

    @property
    def warmup_span(self) -> float:
        return self.window_start - self.start


class CpuSampler:
    """This process's CPU seconds (all threads), sampled from a thread every 0.2 s."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu", daemon=True)

    def start(self) -> CpuSampler:
        self.samples.append((time.monotonic(), time.process_time()))
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append((time.monotonic(), time.process_time()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def busy(self, t0: float, t1: float) -> float | None:
        """Cores busy on average between ``t0`` and ``t1`` (1.0 = one core all the time)."""
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


async def lag_probe(samples: list[tuple[float, float]], interval_s: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleep: a busy loop delays every stream."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(interval_s)
        after = time.monotonic()
        samples.append((after, after - before - interval_s))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds."""
    ms = [v * 1000 for v in values]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "max": max(ms) if ms else None, "mean": statistics.fmean(ms) if ms else None}


def lag_figures(samples: Sequence[tuple[float, float]], phase: Phase) -> dict[str, Any]:
    inside = [lag for t, lag in samples if phase.window_start <= t <= phase.window_end]
    return spread(inside)


class ReplyRecorder:
    """Wraps one engine's ``respond`` to keep each reply's own timings (inside the server)."""

    def __init__(self, engine: Any) -> None:
        self.replies: list[tuple[float, Any]] = []
        original = engine.respond

        def respond(message: Any, *, persona: str | None = None) -> Any:
            reply = original(message, persona=persona)
            self.replies.append((time.monotonic(), reply))
            return reply

        engine.respond = respond

    def ttft(self, window_start: float, window_end: float) -> dict[str, Any]:
        values = [r.first_token_s for t, r in self.replies
                  if window_start <= t < window_end and r.first_token_s is not None]
        return {**spread(values), "replies": len(values)}


# -- the simulated users ----------------------------------------------------------------


async def direct_user(engine: Any, user: int, plan: Plan, phase: Phase,
                      samples: list[Sample]) -> None:
    from botkit.engine import IncomingMessage

    await asyncio.sleep(max(0.0, phase.user_start(user, plan.users) - time.monotonic()))
    key = uuid.uuid4().hex[:40]  # as long as the web adapter's chat keys
    index = 0
    while time.monotonic() < phase.stop:
        sample = Sample(sent=time.monotonic())
        message = IncomingMessage(channel="web", chat_key=key, user_key=key,
                                  text=question(user, index),
                                  platform_message_id=uuid.uuid4().hex)
        try:
            async with asyncio.timeout(plan.message_timeout_s):
                async with engine.respond(message) as reply:
                    async for _ in reply:
                        if sample.ttft_s is None:
                            sample.ttft_s = time.monotonic() - sample.sent
                        sample.pieces += 1
            sample.reply_s = time.monotonic() - sample.sent
            if sample.ttft_s is None:
                sample.error = "no_text"
        except TimeoutError:
            sample.error = "client_timeout"
        except Exception as exc:
            sample.error = f"exception:{type(exc).__name__}"
        samples.append(sample)
        index += 1
        await asyncio.sleep(plan.think_s)


async def web_user(http: HTTP, user: int, plan: Plan, phase: Phase,
                   samples: list[Sample], session_errors: Counter[str]) -> None:
    await asyncio.sleep(max(0.0, phase.user_start(user, plan.users) - time.monotonic()))
    try:
        try:
            status, body = await http.post_json("/widget/api/sessions", {}, {})
            if status != 201:
                session_errors[f"http_{status}:{_error_code(body)}"] += 1
                return
            token = body["token"]
        except Exception as exc:
            session_errors[f"exception:{type(exc).__name__}"] += 1
            return
        auth = {"Authorization": f"Bearer {token}"}
        index = 0
        while time.monotonic() < phase.stop:
            sample = Sample(sent=time.monotonic())
            try:
                async with asyncio.timeout(plan.message_timeout_s):
                    await _web_message(http, auth, question(user, index), sample)
            except TimeoutError:
                sample.error = "client_timeout"
            except Exception as exc:
                sample.error = f"exception:{type(exc).__name__}"
            samples.append(sample)
            index += 1
            await asyncio.sleep(plan.think_s)
    finally:
        await http.aclose()


async def _web_message(http: HTTP, auth: dict[str, str], text: str, sample: Sample) -> None:
    status, body = await http.post_json(
        "/widget/api/messages", {"text": text, "client_message_id": uuid.uuid4().hex}, auth)
    if status != 202:
        sample.error = f"http_{status}:{_error_code(body)}"
        return
    sample.posted_s = time.monotonic() - sample.sent
    turn = body["turn_id"]
    async with http.events(f"/widget/api/turns/{turn}/events", auth) as (status, lines):
        sample.stream_open_s = time.monotonic() - sample.sent
        if status != 200:
            text_body = "".join([line async for line in lines])
            sample.error = f"http_{status}:{_error_code(_json_or_none(text_body))}"
            return
        event = ""
        # Read to the end of the stream (it ends right after "done"), so that the
        # connection can carry the next request.
        async for line in lines:
            if line.startswith("event:"):
                event = line[6:].strip()
                if event == "delta":
                    if sample.ttft_s is None:
                        sample.ttft_s = time.monotonic() - sample.sent
                    sample.pieces += 1
                elif event == "done" and sample.reply_s is None:
                    sample.reply_s = time.monotonic() - sample.sent
            elif line.startswith("data:") and event == "error" and sample.error is None:
                sample.error = f"event_error:{_error_code(_json_or_none(line[5:]), top=True)}"
    if sample.error is None and sample.reply_s is None:
        sample.error = "stream_ended_without_done"
    elif sample.error is None and sample.ttft_s is None:
        sample.error = "no_text"


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_code(body: Any, *, top: bool = False) -> str:
    try:
        return str(body["code"] if top else body["error"]["code"])
    except (KeyError, TypeError):
        return "?"


# -- HTTP clients ------------------------------------------------------------------------

Lines = AsyncIterator[str]


class HTTP:
    """What a simulated user needs from HTTP: a JSON POST and an event stream."""

    async def post_json(self, path: str, body: Any,
                        headers: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def events(self, path: str, headers: dict[str, str]) -> Any:
        """``async with http.events(path, headers) as (status, lines)``."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class RawHTTP(HTTP):
    """One keep-alive HTTP/1.1 connection per user, as a browser tab holds.

    A few lines of asyncio streams: the cheapest client there is, so that as little
    of the machine as possible goes to the load generator. A connection the server
    closed while idle is opened again and the request sent again (both requests are
    safe to repeat: a message carries its ``client_message_id``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def _send(self, method: str, path: str, headers: dict[str, str],
                    body: bytes | None) -> tuple[int, dict[str, str]]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        reader: asyncio.StreamReader | None = None
        for attempt in (0, 1):
            fresh = self._writer is None or self._writer.is_closing()
            if fresh:
                await self._close()
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                self.connections += 1
            reader, writer = self._reader, self._writer
            assert reader is not None
            assert writer is not None
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            except ConnectionError:
                status_line = b""
            if status_line:
                break
            await self._close()
            if fresh or attempt:
                raise ConnectionError("the server closed the connection without an answer")
        assert reader is not None
        status = int(status_line.split()[1])
        answer: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            answer[name.strip().lower()] = value.strip()
        return status, answer

    async def _body_chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        reader = self._reader
        assert reader is not None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = await reader.readexactly(size)
                await reader.readexactly(2)
                yield chunk
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                yield await reader.readexactly(length)
        else:  # delimited by the end of the connection
            while chunk := await reader.read(65536):
                yield chunk
            await self._close()
        if headers.get("connection", "").lower() == "close":
            await self._close()

    async def post_json(self, path: str, body: Any,
                        headers: dict[str, str]) -> tuple[int, Any]:
        status, answer = await self._send("POST", path, headers, json.dumps(body).encode())
        data = b"".join([chunk async for chunk in self._body_chunks(answer)])
        return status, _json_or_none(data.decode("utf-8", "replace"))

    @asynccontextmanager
    async def events(self, path: str, headers: dict[str, str]) -> AsyncIterator[tuple[int, Lines]]:
        status, answer = await self._send("GET", path, headers, None)
        lines = self._lines(answer)
        try:
            yield status, lines
            async for _ in lines:  # the rest of the body, so the connection can be reused
                pass
        except BaseException:
            await self._close()
            raise

    async def _lines(self, headers: dict[str, str]) -> Lines:
        pending = ""
        async for chunk in self._body_chunks(headers):
            pending += chunk.decode("utf-8")
            *complete, pending = pending.split("\n")
            for line in complete:
                yield line.rstrip("\r")
        if pending:
            yield pending

    async def _close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def aclose(self) -> None:
        await self._close()


class HttpxHTTP(HTTP):
    """One ``httpx.AsyncClient`` shared by every user (its own connection pool)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def post_json(self, path: str, body: Any,
                        headers: dict[str, str]) -> tuple[int, Any]:
        response = await self.client.post(path, json=body, headers=headers)
        return response.status_code, _json_or_none(response.text)

    @asynccontextmanager
    async def events(self, path: str, headers: dict[str, str]) -> AsyncIterator[tuple[int, Lines]]:
        async with self.client.stream("GET", path, headers=headers) as response:
            yield response.status_code, response.aiter_lines()


# -- the web server ----------------------------------------------------------------------


async def serve_web(spec: dict[str, Any], ready: Callable[[str], None],
                    stopped: Callable[[], Awaitable[tuple[float, float]]]) -> dict[str, Any]:
    """Serve the widget on 127.0.0.1 until ``stopped()`` returns the measured window.

    Returns what the server saw inside that window: its engine's own time to first
    token and how late its event loop ran.
    """
    from botkit.server.run import ServerRunner, bind_socket
    from botkit_web import WebAdapter

    lag: list[tuple[float, float]] = []
    async with open_bench_engine(spec) as (engine, server_config):
        recorder = ReplyRecorder(engine)
        adapter = WebAdapter(engine, WEB_LIMITS)
        runner = ServerRunner(engine, server_config, sock=bind_socket("127.0.0.1", 0),
                              adapters=[adapter], api_keys=())
        probe = asyncio.create_task(lag_probe(lag))
        serving = asyncio.create_task(runner.serve())
        window = (0.0, 0.0)
        try:
            while not runner.ready.is_set():
                if serving.done():
                    serving.result()
                    raise RuntimeError("the server stopped before it was ready")
                await asyncio.sleep(0.02)
            ready(runner.url)
            window = await stopped()
        finally:
            runner.request_stop()
            try:
                await asyncio.wait_for(asyncio.shield(serving), 15)
            except TimeoutError:
                runner.request_stop(force=True)
                await serving
            probe.cancel()
        phase = Phase(window[0], window[0], window[1], window[1])
        return {"engine_ttft_ms": recorder.ttft(*window),
                "loop_lag_ms": lag_figures(lag, phase), "window": list(window)}


def _child_main() -> None:
    """The server's child process: READY line, then STOP line on stdin, then STATS line."""
    spec = json.loads(sys.argv[1])
    cpu = CpuSampler().start()
    # Only the protocol's lines go to the pipe the benchmark reads (and only reads at the
    # start and the end: anything else printed there could fill it and block the server).
    protocol, sys.stdout = sys.stdout, sys.stderr

    def ready(url: str) -> None:
        print(f"{_READY} {url}", file=protocol, flush=True)

    async def stopped() -> tuple[float, float]:
        line = await asyncio.to_thread(sys.stdin.readline)
        parts = line.split()
        if len(parts) != 3 or parts[0] != _STOP:
            raise RuntimeError(f"unexpected command from the benchmark: {line!r}")
        return float(parts[1]), float(parts[2])

    stats = asyncio.run(serve_web(spec, ready, stopped))
    cpu.stop()
    stats["cores_busy"] = cpu.busy(*stats["window"])
    stats["peak_rss_mb"] = process_peak_rss() / 2**20
    print(f"{_STATS} {json.dumps(stats)}", file=protocol, flush=True)


class ServerProcess:
    """The server in a child process (its own interpreter and GIL)."""

    where = "child process"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from botkit.bench.web import _child_main; _child_main()",
             json.dumps(self.spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(_READY):
                return line.split()[1]
        code = self.process.wait()
        raise RuntimeError(f"the benchmark's server process exited ({code}) before it was "
                           "ready; its error is above")

    def stop(self, phase: Phase) -> dict[str, Any]:
        process = self.process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        stats: dict[str, Any] = {}
        try:
            process.stdin.write(f"{_STOP} {phase.window_start} {phase.window_end}\n")
            process.stdin.flush()
            process.stdin.close()
            for line in process.stdout:
                if line.startswith(_STATS):
                    stats = json.loads(line[len(_STATS):])
        finally:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return stats


class ServerThread:
    """The server in a thread of this process, with its own event loop."""

    where = "thread of this process (own event loop, shared interpreter lock)"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="bench-web-server", daemon=True)
        self._url = ""
        self._ready = threading.Event()
        self._window: asyncio.Future[tuple[float, float]] | None = None
        self._stats: dict[str, Any] = {}
        self._failure: BaseException | None = None

    def start(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        return self._url

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._stats = self._loop.run_until_complete(
                serve_web(self.spec, self._on_ready, self._stopped))
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()
            self._loop.close()

    def _on_ready(self, url: str) -> None:
        self._url = url
        self._ready.set()

    async def _stopped(self) -> tuple[float, float]:
        self._window = self._loop.create_future()
        return await self._window

    def stop(self, phase: Phase) -> dict[str, Any]:
        window = (phase.window_start, phase.window_end)
        while self._window is None and self._thread.is_alive():
            time.sleep(0.01)
        future = self._window
        if future is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(
                    lambda: None if future.done() else future.set_result(window))
        self._thread.join(60)
        if self._failure is not None:
            raise self._failure
        return self._stats


# -- the contenders ---------------------------------------------------------------------


async def run_direct(plan: Plan, workdir: Path) -> dict[str, Any]:
    samples: list[Sample] = []
    lag: list[tuple[float, float]] = []
    cpu = CpuSampler().start()
    async with open_bench_engine(plan.spec(workdir)) as (engine, _):
        probe = asyncio.create_task(lag_probe(lag))
        phase = Phase.plan(plan)
        try:
            await asyncio.gather(*(direct_user(engine, i, plan, phase, samples)
                                   for i in range(plan.users)))
        finally:
            probe.cancel()
    cpu.stop()
    return summarize("direct", samples, phase, plan, Counter(), {
        "this_process_cores_busy": cpu.busy(phase.window_start, phase.window_end),
        "loop_lag_ms": lag_figures(lag, phase),
    })


async def run_web(plan: Plan, workdir: Path, where: str, client: str) -> dict[str, Any]:
    spec = plan.spec(workdir)
    server: ServerProcess | ServerThread = (
        ServerProcess(spec) if where == "process" else ServerThread(spec))
    url = await asyncio.to_thread(server.start)
    samples: list[Sample] = []
    session_errors: Counter[str] = Counter()
    lag: list[tuple[float, float]] = []
    cpu = CpuSampler().start()
    phase = Phase.plan(plan)  # planned again once the clients exist; this one is for failures
    connections: int | None = None
    try:
        async with _clients(client, url, plan.users) as https:
            probe = asyncio.create_task(lag_probe(lag))
            phase = Phase.plan(plan)
            try:
                await asyncio.gather(*(web_user(http, i, plan, phase, samples, session_errors)
                                       for i, http in enumerate(https)))
            finally:
                probe.cancel()
            if client == "raw":
                connections = sum(getattr(http, "connections", 0) for http in https)
    finally:
        cpu.stop()
        server_stats = await asyncio.to_thread(server.stop, phase)
    return summarize("web", samples, phase, plan, session_errors, {
        "server": server.where,
        "client": CLIENTS[client],
        "connections_opened": connections,
        "this_process_cores_busy": cpu.busy(phase.window_start, phase.window_end),
        "loop_lag_ms": lag_figures(lag, phase),
        "server_engine_ttft_ms": server_stats.get("engine_ttft_ms"),
        "server_loop_lag_ms": server_stats.get("loop_lag_ms"),
        "server_cores_busy": server_stats.get("cores_busy"),
        "server_peak_rss_mb": server_stats.get("peak_rss_mb"),
    })


@asynccontextmanager
async def _clients(kind: str, url: str, users: int) -> AsyncIterator[list[HTTP]]:
    """One HTTP client per user: its own connection (raw), or one shared httpx pool."""
    if kind == "raw":
        host, _, port = url.removeprefix("http://").rpartition(":")
        yield [RawHTTP(host.strip("[]"), int(port)) for _ in range(users)]
        return
    import httpx

    limits = httpx.Limits(max_connections=users + 10, max_keepalive_connections=users + 10)
    async with httpx.AsyncClient(base_url=url, limits=limits, trust_env=False,
                                 timeout=httpx.Timeout(600.0)) as shared:
        yield [HttpxHTTP(shared) for _ in range(users)]


def summarize(name: str, samples: Sequence[Sample], phase: Phase, plan: Plan,
              session_errors: Counter[str], extra: dict[str, Any]) -> dict[str, Any]:
    counted = [s for s in samples if phase.counted(s)]
    ok = [s for s in counted if s.error is None]
    errors = Counter(s.error for s in samples if s.error is not None)
    errors.update({f"session:{k}": v for k, v in session_errors.items()})
    return {
        "status": "ok",
        "label": LABELS[name],
        "messages": len(ok),
        "messages_sent_in_window": len(counted),
        "messages_per_s": len(ok) / plan.duration_s,
        "pieces_per_s": sum(s.pieces for s in ok) / plan.duration_s,
        "pieces_per_reply": statistics.fmean(s.pieces for s in ok) if ok else None,
        "errors": sum(errors.values()),
        "errors_in_window": sum(1 for s in counted if s.error is not None),
        "errors_by_kind": dict(errors.most_common()),
        "messages_whole_run": len(samples),
        "ttft_ms": spread([s.ttft_s for s in ok if s.ttft_s is not None]),
        "reply_ms": spread([s.reply_s for s in ok if s.reply_s is not None]),
        **({"post_answered_ms": spread([s.posted_s for s in ok if s.posted_s is not None]),
            "stream_opened_ms": spread([s.stream_open_s for s in ok
                                        if s.stream_open_s is not None])}
           if name == "web" else {}),
        **extra,
    }


# -- the run ---------------------------------------------------------------------------


def raise_fd_limit(needed: int) -> dict[str, Any]:
    """Raise the soft limit on open files to ``needed`` where the hard limit allows."""
    try:
        import resource
    except ImportError:  # not on this platform
        return {"soft": None, "needed": needed}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return {"soft": None if soft == resource.RLIM_INFINITY else soft, "needed": needed}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    needs = {"botkit_web": "the web adapter (pip install -e adapters/web)"}
    if args.model == "scripted":
        needs["pytest"] = "pytest, for botkit.testing's scripted generator (pip install pytest)"
    if args.client == "httpx":
        needs["httpx"] = "httpx (pip install httpx)"
    for module, what in needs.items():
        try:
            __import__(module)
        except ImportError:
            raise SystemExit(f"botkit bench web needs {what}") from None
    if args.token_rate <= 0 or args.reply_words < 1 or args.duration <= 0 or args.think_s < 0 \
            or args.warmup < 0:
        raise SystemExit("--token-rate, --reply-words and --duration must be positive, "
                         "--think-s and --warmup not negative")
    users = args.users or DEFAULT_USERS[args.model]
    if users < 1:
        raise SystemExit("--users must be at least 1")
    plan = Plan(users=users, duration_s=args.duration, warmup_s=args.warmup, model=args.model,
                token_rate=args.token_rate, reply_words=args.reply_words, think_s=args.think_s,
                config_path=getattr(args, "config", None))
    fds = raise_fd_limit(2 * users + 256)
    skip = set(args.skip or ())

    report: dict[str, Any] = {
        "benchmark": "botkit bench web",
        "command": " ".join(["botkit", *sys.argv[1:]])
        if Path(sys.argv[0]).name == "botkit" else " ".join(sys.argv),
        "baseline": "direct",
        "baseline_label": BASELINE_LABEL,
        "machine": machine_info(),
        "settings": {
            "users": users, "duration_s": plan.duration_s, "warmup_s": plan.warmup_s,
            "model": plan.model,
            "model_source": None if plan.model == "scripted" else _model_source(plan),
            "token_rate": plan.token_rate if plan.model == "scripted" else None,
            "reply_words": plan.reply_words if plan.model == "scripted" else None,
            "think_s": plan.think_s, "server": args.server, "config": plan.config_path,
            "database": "a fresh SQLite file per contender ([memory] sqlite_synchronous "
                        "from the config)",
            "web_rate_limits": WEB_LIMITS,
            "open_files": fds,
            "timing": "TTFT: from just before respond() / the POST to the first piece / "
                      "event: delta; reply: to the end of the reply (event: done, sent "
                      "once the reply is stored). Counted: messages sent inside the "
                      "measured window; errors: the whole run",
            "client": args.client,
            "placement": placement(args.server, args.client),
        },
        "contenders": {},
    }

    def save(partial: bool) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            body = {**report, "partial": True} if partial else report
            args.json.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")

    contenders: dict[str, Any] = report["contenders"]
    for name in CONTENDERS:
        if name in skip:
            contenders[name] = {"status": "skipped", "label": LABELS[name]}
            continue
        progress(f"{name}: {users} users, {plan.warmup_s:g} s warm-up + {plan.duration_s:g} s "
                 f"measured + {plan.warmup_s:g} s tail")
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix=f"botkit-bench-web-{name}-") as tmp:
                if name == "direct":
                    result = asyncio.run(run_direct(plan, Path(tmp)))
                else:
                    result = asyncio.run(run_web(plan, Path(tmp), args.server, args.client))
        except Exception as exc:  # a contender that cannot run is reported, not fatal
            reason = f"{type(exc).__name__}: {exc}".strip()
            contenders[name] = {"status": "failed", "label": LABELS[name],
                                "reason": reason[:500]}
            progress(f"{name}: FAILED ({reason[:200]})")
            save(partial=True)
            continue
        contenders[name] = result
        progress(f"{name}: done in {time.perf_counter() - started:.1f} s, "
                 f"{result['messages']} messages, {result['errors']} errors")
        save(partial=True)

    report["comparison"] = compare(contenders, users)
    report["peak_rss_process_mb"] = process_peak_rss() / 2**20
    print_report(report)
    save(partial=False)
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any(row["status"] == "failed" for row in contenders.values()) else 0


def _model_source(plan: Plan) -> str:
    from botkit.config import load_config

    model = load_config(plan.config_path).model
    return f"{model.source} ({model.device}, {model.dtype})"


def placement(server: str, client: str) -> str:
    where = ("uvicorn in a child process (its own interpreter, as botkit serve runs)"
             if server == "process" else
             "uvicorn in a thread of this process (its own event loop; one interpreter "
             "lock with the clients)")
    return (f"web: {where}; users: {CLIENTS[client]}, in this process's event loop. "
            "direct: the engine and the users share this process's event loop")


def compare(contenders: dict[str, Any], users: int) -> dict[str, Any]:
    direct, web = contenders.get("direct", {}), contenders.get("web", {})
    if direct.get("status") != "ok" or web.get("status") != "ok":
        return {"ttft_p95_added_ms": None, "ttft_p95_ratio": None, "target_met": None}

    def figure(row: dict[str, Any], kind: str, q: str) -> float | None:
        value = row[kind][q]
        return float(value) if isinstance(value, int | float) else None

    out: dict[str, Any] = {}
    for kind in ("ttft_ms", "reply_ms"):
        for q in ("p50", "p95", "p99"):
            top, bottom = figure(web, kind, q), figure(direct, kind, q)
            stem = f"{kind.removesuffix('_ms')}_{q}"
            out[f"{stem}_added_ms"] = None if top is None or bottom is None else top - bottom
            out[f"{stem}_ratio"] = top / bottom if top is not None and bottom else None
    rate = direct["messages_per_s"]
    out["messages_per_s_ratio"] = web["messages_per_s"] / rate if rate else None
    added = out["ttft_p95_added_ms"]
    out["target"] = (f"web adds < {TARGET_ADDED_TTFT_P95_MS:g} ms to p95 TTFT with 0 errors "
                     f"at {TARGET_USERS} users")
    out["target_at_target_load"] = users >= TARGET_USERS
    out["target_met"] = (added is not None and added < TARGET_ADDED_TTFT_P95_MS
                         and web["errors"] == 0 and direct["errors"] == 0
                         and users >= TARGET_USERS)
    return out


# -- machine ---------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def process_peak_rss() -> int:
    from botkit.bench.serve import process_peak_rss as peak

    return peak()


def machine_info() -> dict[str, Any]:
    from botkit.bench.serve import _cpu_model, cpu_flags

    flags = cpu_flags()
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    versions = {name: _version(name) for name in (
        "torch", "transformers", "uvicorn", "starlette", "httpx", "h11", "httptools",
        "uvloop", "sqlalchemy", "aiosqlite")}
    return {
        "platform": platform.platform(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "python": platform.python_version(),
        **versions,
        "uvicorn_loop": "uvloop" if versions["uvloop"] else "asyncio",
        "uvicorn_http": "httptools" if versions["httptools"] else "h11",
    }


# -- output ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    m, s = report["machine"], report["settings"]
    generator = (f"scripted generator, {s['reply_words']} words at {s['token_rate']:g} "
                 "words/s per stream" if s["model"] == "scripted" else
                 f"the real model, {s['model_source']}")
    print(f"botkit bench web: {s['users']} concurrent users per contender, "
          f"{s['duration_s']:g} s measured (+{s['warmup_s']:g} s warm-up, +{s['warmup_s']:g} s "
          f"tail), {generator}, think {s['think_s']:g} s")
    print(f"machine: {m['processor']}, {m['cores']} cores ({m['usable_cores']} usable), "
          f"flags {' '.join(m['cpu_flags']) or '-'}; python {m['python']}, "
          f"uvicorn {m['uvicorn']} ({m['uvicorn_loop']} loop, {m['uvicorn_http']}), "
          f"starlette {m['starlette']}, httpx {m['httpx']}, sqlalchemy {m['sqlalchemy']}, "
          f"aiosqlite {m['aiosqlite']}, torch {m['torch']}, transformers {m['transformers']}")
    print(f"placement: {s['placement']}")
    print(f"baseline: {report['baseline_label']}")
    print()
    header = (f"{'contender':<28}{'msgs':>6}{'msg/s':>8}{'errors':>7}"
              f"{'TTFT p50':>9}{'p95':>6}{'p99':>6}{'reply p50':>10}{'p95':>6}{'p99':>6}"
              f"{'loop lag p99':>13}{'cores':>6}")
    print(header)
    print("-" * len(header))
    for row in report["contenders"].values():
        if row["status"] != "ok":
            reason = f": {row['reason']}" if row.get("reason") else ""
            print(f"{row['label']:<28}{row['status'].upper()}{reason}"[:len(header)])
            continue
        t, r = row["ttft_ms"], row["reply_ms"]
        print(f"{row['label']:<28}{row['messages']:>6}{row['messages_per_s']:>8.1f}"
              f"{row['errors']:>7}{_ms(t['p50']):>9}{_ms(t['p95']):>6}{_ms(t['p99']):>6}"
              f"{_ms(r['p50']):>10}{_ms(r['p95']):>6}{_ms(r['p99']):>6}"
              f"{_ms(row['loop_lag_ms']['p99']):>13}"
              f"{_num(row['this_process_cores_busy']):>6}")
    print("(ms. msgs: replies completed of the messages sent in the measured window; errors: "
          "whole run; loop lag: how late this process's event loop woke a 10 ms sleep; "
          "cores: CPU of this process, 1.0 = one core)")
    for row in report["contenders"].values():
        if row["status"] == "ok" and row["errors"]:
            kinds = ", ".join(f"{k} x{v}" for k, v in row["errors_by_kind"].items())
            print(f"{row['label']} errors: {kinds}")
    web = report["contenders"].get("web", {})
    if web.get("status") == "ok":
        inside = web.get("server_engine_ttft_ms") or {}
        lag = web.get("server_loop_lag_ms") or {}

        def trio(figures: dict[str, Any] | None) -> str:
            figures = figures or {}
            return "/".join(_ms(figures.get(q)) for q in ("p50", "p95", "p99"))

        print("where the web path's time goes (p50/p95/p99 ms from sending the message): "
              f"POST answered {trio(web.get('post_answered_ms'))}, event stream open "
              f"{trio(web.get('stream_opened_ms'))}, first delta {trio(web['ttft_ms'])}; "
              f"inside the server the engine's own TTFT (from respond()) {trio(inside)}")
        print(f"server ({web['server']}): {_num(web.get('server_cores_busy'))} cores busy, "
              f"event loop lag p50/p99 {_ms(lag.get('p50'))}/{_ms(lag.get('p99'))} ms; "
              f"users' connections opened: {web.get('connections_opened') or '-'}; "
              f"server peak RSS {_num(web.get('server_peak_rss_mb'), 0)} MiB")
    print(f"this process's peak RSS: {report['peak_rss_process_mb']:.0f} MiB")
    c = report["comparison"]
    print()
    if c.get("ttft_p95_added_ms") is None:
        print("web vs direct: not compared (a contender did not run)")
        return
    print("web vs direct (baseline), same load, same run:")
    for kind, label in (("ttft", "TTFT"), ("reply", "full reply")):
        parts = [f"{q} {c[f'{kind}_{q}_added_ms']:+.0f} ms ({_num(c[f'{kind}_{q}_ratio'], 2)}x)"
                 for q in ("p50", "p95", "p99")]
        print(f"  {label:<11}" + ", ".join(parts))
    print(f"  messages/s  {_num(c['messages_per_s_ratio'], 2)}x")
    verdict = "MET" if c["target_met"] else "NOT MET"
    why = "" if c["target_at_target_load"] else f" (this run has fewer than {TARGET_USERS} users)"
    print(f"target ({c['target']}): {verdict}{why}")


# -- entry points ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m botkit.bench.web", description=(__doc__ or "").splitlines()[0]))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
