"""The web console under ``/console``: support agents take chats over from the bot,
operators also browse every conversation, export or forget a user, see the LoRA
adapters, and edit personas (preview, publish hot, history, rollback).

Accounts are made with ``botkit console add-user``; see ``docs/console.md``.
``create_app`` mounts :func:`routes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from botkit.server.app import Server


def routes(server: Server) -> list[BaseRoute]:
    """The console's routes for ``server``'s app (pages, JSON API, static files)."""
    from botkit.console.web import Console

    return Console(server).routes()


__all__ = ["routes"]
