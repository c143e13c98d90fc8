"""Training-data selection: which stored conversations are worth fine-tuning on.

``select_training_dialogues`` turns the conversation memory into ``TrainingDialogue``
records, (role, text) turns with roles "user"/"assistant", oldest conversation first.
``ConversationStore.training_selection`` and ``training_conversations`` call it inside
their own transaction. The rules:

- ``persona`` keeps one persona's conversations; ``since`` (timezone-aware) those active
  at or after it (``updated_at``, so a long-lived chat with new turns comes back whole).
- With ``feedback`` a dialogue runs up to its last bot reply rated +1; without, up to its
  last bot reply. A reply rated -1 ends it before that reply.
- ``agent_replies`` also takes a human agent's messages, as assistant turns, and runs up
  to the last of them; when it is off, a human agent's message ends the dialogue before
  it, so an agent's words are never passed off as the bot's.
- System messages are dropped and consecutive turns of one role merged. A dialogue
  starts with a user turn, ends with an assistant turn, and never has two turns of the
  same role in a row.
- Conversations owned by a user who opted out are left out, and so is every message an
  opted-out user wrote anywhere; their +1 ratings do not count, while their -1 ratings
  still keep a reply out. ``TrainingSelection.skipped_opted_out`` counts conversations
  that would have been exported had nobody opted out, and were not.

Three queries whatever the size: conversations, their messages, their feedback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from botkit.memory.models import Conversation, Feedback, Message, User

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingDialogue:
    """One conversation as training data: (role, text) turns, roles "user"/"assistant".

    It starts with a user turn, ends with an assistant turn, and never has two turns of
    the same role in a row.
    """

    conversation_id: int
    channel: str
    persona: str
    messages: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TrainingSelection:
    """What ``training_selection`` found: the dialogues, and what opt-out held back.

    ``skipped_opted_out`` counts conversations that would have been exported had nobody
    opted out, and were not: the owner opted out, or leaving out opted-out users' words
    and ratings left nothing worth training on.
    """

    dialogues: list[TrainingDialogue]
    skipped_opted_out: int


@dataclass(frozen=True)
class _Turn:
    """A stored message with what training selection needs to know about it."""

    role: str
    text: str
    by_opted_out: bool
    rated_down: bool
    # A +1 from someone who has not opted out; a +1 from anyone, opt-out ignored.
    rated_up: bool
    rated_up_by_anyone: bool


_REPLY_ROLES = ("assistant", "agent")


def _training_turns(
    turns: Sequence[_Turn], *, feedback: bool, agent_replies: bool, honour_opt_out: bool
) -> tuple[tuple[str, str], ...] | None:
    """The (role, text) turns to train on from one conversation, or None to skip it.

    A reply rated -1 ends the dialogue before it; so does a human agent's message when
    ``agent_replies`` is off, so an agent's words are never passed off as the bot's.
    The dialogue ends at the last reply before that point which earns its place: a bot
    reply rated +1 (any bot reply when ``feedback`` is off), or an agent's message.
    """
    end: int | None = None
    for index, turn in enumerate(turns):
        if turn.role not in _REPLY_ROLES:
            continue
        if turn.rated_down or (turn.role == "agent" and not agent_replies):
            break
        if honour_opt_out and turn.by_opted_out:
            continue
        rated_up = turn.rated_up if honour_opt_out else turn.rated_up_by_anyone
        if turn.role == "agent" or not feedback or rated_up:
            end = index
    if end is None:
        return None

    merged: list[tuple[str, str]] = []
    for turn in turns[: end + 1]:
        if turn.role == "system" or (honour_opt_out and turn.by_opted_out) or not turn.text.strip():
            continue
        role = "user" if turn.role == "user" else "assistant"
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]}\n\n{turn.text}")
        elif merged or role == "user":  # a dialogue opens with the user
            merged.append((role, turn.text))
    if len(merged) < 2 or merged[-1][0] != "assistant":
        return None
    return tuple(merged)


async def select_training_dialogues(
    session: AsyncSession,
    *,
    persona: str | None,
    since: datetime | None,
    feedback: bool,
    agent_replies: bool,
) -> TrainingSelection:
    """The training dialogues, and how many conversations opt-out held back.

    Runs its three queries on ``session``, inside the caller's transaction; the rules are
    in the module docstring.
    """
    if since is not None and since.utcoffset() is None:
        raise ValueError(f"since must be timezone-aware, not {since!r}")
    owner, author, rater = aliased(User), aliased(User), aliased(User)
    reply, rating = aliased(Message), aliased(Feedback)

    # Only conversations with a reply that could end a dialogue are candidates; the
    # rest is decided per conversation in Python, opt-out included, so that what
    # opt-out held back can be counted.
    reply_roles = _REPLY_ROLES if agent_replies else ("assistant",)
    has_reply = exists().where(
        reply.conversation_id == Conversation.id, reply.role.in_(reply_roles)
    )
    if feedback:
        rated_up = exists().where(rating.message_id == reply.id, rating.score == 1)
        has_reply = exists().where(
            reply.conversation_id == Conversation.id,
            or_(
                and_(reply.role == "assistant", rated_up),
                reply.role == "agent" if agent_replies else false(),
            ),
        )
    wanted: list[ColumnElement[bool]] = [has_reply]
    if persona is not None:
        wanted.append(Conversation.persona == persona)
    if since is not None:
        wanted.append(Conversation.updated_at >= since)
    candidate_ids = select(Conversation.id).where(*wanted)
    replies = select(Message.id).where(
        Message.conversation_id.in_(candidate_ids), Message.role.in_(_REPLY_ROLES)
    )
    kept_score = case((func.coalesce(rater.opted_out, false()) == false(), Feedback.score))

    conversations = (
        await session.execute(
            select(
                Conversation.id,
                Conversation.channel,
                Conversation.persona,
                func.coalesce(owner.opted_out, false()),
            )
            .outerjoin(owner, owner.id == Conversation.user_id)
            .where(*wanted)
            .order_by(Conversation.id)
        )
    ).all()
    messages = (
        await session.execute(
            select(
                Message.conversation_id,
                Message.id,
                Message.role,
                Message.text,
                func.coalesce(author.opted_out, false()),
                Message.interrupted,
            )
            .outerjoin(author, author.id == Message.user_id)
            .where(Message.conversation_id.in_(candidate_ids))
            .order_by(Message.conversation_id, Message.id)
        )
    ).all()
    ratings = (
        await session.execute(
            select(
                Feedback.message_id,
                func.min(Feedback.score),
                func.max(Feedback.score),
                func.max(kept_score),
            )
            .outerjoin(rater, rater.id == Feedback.user_id)
            .where(Feedback.message_id.in_(replies))
            .group_by(Feedback.message_id)
        )
    ).all()

    scores = {message_id: (low, high, kept) for message_id, low, high, kept in ratings}
    turns: dict[int, list[_Turn]] = {}
    for conversation_id, message_id, role, body, by_opted_out, interrupted in messages:
        low, high, kept = scores.get(message_id, (None, None, None))
        turns.setdefault(conversation_id, []).append(
            _Turn(
                role=role,
                text=body,
                by_opted_out=bool(by_opted_out),
                # An interrupted reply ends a dialogue like a reply rated down.
                rated_down=low == -1 or bool(interrupted),
                rated_up=kept == 1,
                rated_up_by_anyone=high == 1,
            )
        )

    dialogues: list[TrainingDialogue] = []
    skipped = 0
    rules = {"feedback": feedback, "agent_replies": agent_replies}
    for conversation_id, channel, persona_name, owner_opted_out in conversations:
        its_turns = turns.get(conversation_id, [])
        kept_turns = (
            None if owner_opted_out else _training_turns(its_turns, honour_opt_out=True, **rules)
        )
        if kept_turns is not None:
            dialogues.append(TrainingDialogue(conversation_id, channel, persona_name, kept_turns))
        elif _training_turns(its_turns, honour_opt_out=False, **rules) is not None:
            skipped += 1
    logger.info(
        "training selection: %d dialogues of %d candidate conversations, %d held back by opt-out",
        len(dialogues),
        len(conversations),
        skipped,
    )
    return TrainingSelection(dialogues, skipped)


__all__ = ["TrainingDialogue", "TrainingSelection", "select_training_dialogues"]
