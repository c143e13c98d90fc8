"""The terminal channel: ``botkit chat``.

The first adapter, registered through the ``botkit.adapters`` entry point like any
other. The user types a line, the reply streams token by token; ``/reset`` starts a new
conversation, ``/exit`` or Ctrl-D leaves. The conversation stays in memory, so
``botkit chat --resume`` picks it up again after a restart.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from botkit.adapters import Adapter
from botkit.engine import IncomingMessage
from botkit.errors import EmptyMessageError, GenerationError, InputError

if TYPE_CHECKING:
    from botkit.engine import DialogueEngine

log = logging.getLogger(__name__)
HELP = "Type a message and press Enter. /reset starts over, /exit (or Ctrl-D) leaves."


class TerminalAdapter(Adapter):
    name = "terminal"

    def __init__(
        self,
        engine: DialogueEngine,
        config: Mapping[str, Any] | None = None,
        *,
        persona: str | None = None,
        stdin: IO[str] | None = None,
        stdout: IO[str] | None = None,
        user: str | None = None,
    ) -> None:
        super().__init__(engine, config)
        self.persona = engine.persona(persona)
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.user = user or _os_user()
        self.chat_key = f"{self.user}:{self.persona.name}"
        self._task: asyncio.Task[None] | None = None
        engine.register_delivery(self.name, self.deliver)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self, grace_s: float = 30.0) -> None:
        if self._task is not None:
            self._task.cancel()

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    async def once(self, text: str, *, resume: bool = False) -> str:
        """Answer one message: the reply alone goes to stdout (for scripts)."""
        if not resume:
            await self._reset()
        reply = await self._answer(text, show_name=False)
        self._write("\n")
        return reply

    async def run(self, *, resume: bool = False) -> None:
        """The interactive loop; returns on /exit or end of input."""
        name = self.persona.display_name
        transcript = await self.engine.transcript(self.name, self.chat_key) if resume else []
        if transcript:
            self._write(f"(resuming: {len(transcript)} earlier messages)\n")
            for message in transcript:
                who = {"user": "you", "agent": "team"}.get(message.role, name)
                if message.role == "system":
                    continue
                self._write(f"{who}> {message.text}\n")
        else:
            await self._reset()
            self._write(f"{HELP}\n")
            if self.persona.greeting:
                self._write(f"{name}> {self.persona.greeting}\n")
        while True:
            self._write("you> ")
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:  # Ctrl-D
                self._write("\n")
                return
            command = line.strip()
            if command in {"/exit", "/quit"}:
                return
            if command == "/reset":
                await self._reset()
                self._write("(new conversation)\n")
                if self.persona.greeting:
                    self._write(f"{name}> {self.persona.greeting}\n")
                continue
            if command in {"/help", "/?"}:
                self._write(f"{HELP}\n")
                continue
            if not command:
                continue
            try:
                await self._answer(line.rstrip("\n"), show_name=True)
            except EmptyMessageError:
                continue
            except (InputError, GenerationError) as exc:
                self._write(f"\n(botkit: {exc})\n")
                continue
            self._write("\n")

    async def _reset(self) -> None:
        await self.engine.new_conversation(
            self.name, self.chat_key, self.user, persona=self.persona.name
        )

    async def _answer(self, text: str, *, show_name: bool) -> str:
        message = IncomingMessage(
            channel=self.name, chat_key=self.chat_key, user_key=self.user, text=text,
            user_name=self.user,
        )
        named = not show_name
        async with self.engine.respond(message, persona=self.persona.name) as reply:
            async for piece in reply:
                if not named:  # the name only once there is something to say
                    self._write(f"{self.persona.display_name}> ")
                    named = True
                self._write(piece)
        if reply.handoff and not reply.text and show_name:
            self._write("(a person from the team has the chat; their replies appear here)")
        return reply.text

    async def deliver(self, conversation: Any, text: str) -> None:
        """A message from the support team (human handoff), printed as it arrives."""
        if conversation.chat_key == self.chat_key:
            self._write(f"\nteam> {text}\nyou> ")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
