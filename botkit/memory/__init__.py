"""Conversation memory: who said what, in which chat, in SQLite or PostgreSQL.

The engine uses ``ConversationStore`` and the frozen records it returns; the schema
lives in ``models`` and changes only through Alembic revisions (``migrate``).
"""

from botkit.memory.store import (
    ConsoleUserRecord,
    ConversationEventRecord,
    ConversationRecord,
    ConversationStore,
    FeedbackRecord,
    MessageRecord,
    PersonaVersionRecord,
    QueueItem,
    StateConflict,
    UserRecord,
)
from botkit.memory.training import TrainingDialogue, TrainingSelection

__all__ = [
    "ConsoleUserRecord",
    "ConversationEventRecord",
    "ConversationRecord",
    "ConversationStore",
    "FeedbackRecord",
    "MessageRecord",
    "PersonaVersionRecord",
    "QueueItem",
    "StateConflict",
    "TrainingDialogue",
    "TrainingSelection",
    "UserRecord",
]
