"""Conversation memory: who said what, in which chat, in SQLite or PostgreSQL.

The engine uses ``ConversationStore`` and the frozen records it returns; the schema
lives in ``models`` and changes only through Alembic revisions (``migrate``).
"""

from botkit.memory.store import (
    ConversationRecord,
    ConversationStore,
    FeedbackRecord,
    MessageRecord,
    UserRecord,
)
from botkit.memory.training import TrainingDialogue, TrainingSelection

__all__ = [
    "ConversationRecord",
    "ConversationStore",
    "FeedbackRecord",
    "MessageRecord",
    "TrainingDialogue",
    "TrainingSelection",
    "UserRecord",
]
