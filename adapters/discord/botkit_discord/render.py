"""Discord message text: splitting long replies, and mentions in and out of the model.

A Discord message holds at most :data:`MESSAGE_LIMIT` characters (Python ``len``).
:func:`split_message` cuts a longer reply, written in Discord Markdown, into chunks that
each fit, preferring paragraph boundaries, then line breaks, then sentence ends, then
spaces, and only then a hard cut, which never separates a letter from its combining
marks or the parts of an emoji sequence. Cuts avoid the inside of mentions, custom
emoji, timestamps, URLs, masked links, inline code and spoilers while any other cut is
possible. A fenced code block cut in two is closed at the end of the first chunk and
reopened, with its opener line (```` ```python ````), at the start of the next one.

:func:`strip_own_mention` removes the bot's own mention from an incoming message and
:func:`readable_mentions` turns the other mention tokens into names the model can read.
Outgoing pings are left to Discord's ``AllowedMentions``, not handled here.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["MESSAGE_LIMIT", "readable_mentions", "split_message", "strip_own_mention"]

MESSAGE_LIMIT = 2000
"""Discord's limit on a message's content, in characters."""

# ---------------------------------------------------------------------------- fences
# Fences are recognised line by line, CommonMark style: an opener line of three or more
# backticks and an optional info string (the language), a closing line of at least as
# many backticks and nothing else. An opener without a closing line is plain text.

_OPENER = re.compile(r"[ \t]*(`{3,})([^`\r\n]*)")
_CLOSER = re.compile(r"[ \t]*(`{3,})[ \t\r]*")


@dataclass(frozen=True)
class _Fence:
    """A fenced code block: positions in the text, and what closes and reopens it."""

    open_at: int  # the opener's first backtick
    body_start: int  # the first character after the opener line's newline
    close_start: int  # the start of the closing line
    close_end: int  # the end of the closing line (its newline, or the end of the text)
    reopen: str  # the opener line and a newline, e.g. "```python\n"
    close: str  # a newline and the opener's backticks, e.g. "\n```"


def _find_fences(text: str) -> list[_Fence]:
    """Every closed fenced code block in ``text``, in order."""
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    # longest closing-line backtick run at or after each line, to skip unclosed openers fast
    longest = [0] * (len(lines) + 1)
    for index in range(len(lines) - 1, -1, -1):
        closer = _CLOSER.fullmatch(lines[index])
        longest[index] = max(longest[index + 1], len(closer.group(1)) if closer else 0)
    fences: list[_Fence] = []
    index = 0
    while index < len(lines):
        opener = _OPENER.fullmatch(lines[index])
        if opener is None or longest[index + 1] < len(opener.group(1)):
            index += 1
            continue
        backticks = opener.group(1)
        end = index + 1
        while True:
            closer = _CLOSER.fullmatch(lines[end])
            if closer is not None and len(closer.group(1)) >= len(backticks):
                break
            end += 1
        fences.append(
            _Fence(
                open_at=starts[index] + opener.start(1),
                body_start=starts[index + 1],
                close_start=starts[end],
                close_end=starts[end] + len(lines[end]),
                reopen=lines[index].strip() + "\n",
                close="\n" + backticks,
            )
        )
        index = end + 1
    return fences


def _fence_fits(text: str, fence: _Fence, limit: int) -> bool:
    """Whether the fence can be closed and reopened within ``limit``.

    Its opener and closer together take at most half of ``limit``, and one message holds
    its opener line up to the body's first visible character, and the closer (a blank
    body: the whole fence). A fence that does not fit, from an absurdly long opener line
    or a tiny limit, is split as plain text.
    """
    line_start = text.rfind("\n", 0, fence.open_at) + 1
    if len(fence.reopen) + len(fence.close) > limit // 2:
        return False
    body = text[fence.body_start : fence.close_start]
    if not body.strip():
        return fence.close_end - line_start <= limit
    first = fence.body_start + len(body) - len(body.lstrip())
    return first + 1 - line_start + len(fence.close) <= limit


# ---------------------------------------------------------------------------- layout

_GUARDED = re.compile(
    r"<(?:@[!&]?\d+|#\d+|a?:\w+:\d+|t:-?\d+(?::[tTdDfFR])?|/[^<>\n]+:\d+)>"  # mentions &c.
    r"|\[[^\[\]\n]*\]\(<?https?://[^\s()<>]+>?\)"  # masked link
    r"|<?https?://[^\s<>]+>?"  # URL, bare or in angle brackets
    r"|(?<!`)(`{1,2})(?!`)[^\n]*?(?<!`)\1(?!`)"  # inline code
    r"|\|\|(?:(?!\n\n).)+?\|\|",  # spoiler
    re.DOTALL,
)
_SPACE = re.compile(r"\s*")
_SENTENCE_ENDS = ".!?…。！？"
_CLOSERS = "\"')]}*_”’»"
_JOINERS = frozenset("\u200d\u20e3") | {chr(c) for c in range(0x1F3FB, 0x1F400)}


def _is_joined(char: str) -> bool:
    """Whether ``char`` belongs to the character before it (marks, selectors, modifiers)."""
    code = ord(char)
    return (
        char in _JOINERS
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0020 <= code <= 0xE007F
        or 0xE0100 <= code <= 0xE01EF
    )


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


@dataclass(frozen=True)
class _Run:
    """A whitespace run ``[start, end)`` where a chunk may end, and its kind of boundary."""

    start: int  # where the chunk before it ends
    resume: int  # where the chunk after it starts: after its last newline, keeping indentation
    level: int  # 0 paragraph, 1 line, 2 sentence, 3 word


def _runs(text: str) -> list[_Run]:
    """The whitespace runs between visible characters, classified as boundaries."""
    runs: list[_Run] = []
    for match in re.finditer(r"\s+", text):
        start, end = match.span()
        if start == 0 or end == len(text):
            continue
        newlines = match.group().count("\n")
        before = text[start - 1]
        if before in _CLOSERS and start > 1:  # 'done.)' and '"Yes!"' end sentences too
            before = text[start - 2]
        level = 0 if newlines >= 2 else 1 if newlines else 2 if before in _SENTENCE_ENDS else 3
        resume = start + match.group().rfind("\n") + 1 if newlines else end
        runs.append(_Run(start, resume, level))
    return runs


class _Layout:
    """What :func:`split_message` needs to know about each position of one text."""

    def __init__(self, text: str, limit: int) -> None:
        self.text = text
        self.limit = limit
        size = len(text) + 1
        self.fences = [f for f in _find_fences(text) if _fence_fits(text, f, limit)]
        self.fence_at = [-1] * size  # the fence whose body holds the position, or -1
        self.no_end = bytearray(size)  # a chunk may not end here (inside a fence line)
        self.no_start = bytearray(size)  # a chunk may not start here (a closing line)
        for number, fence in enumerate(self.fences):
            self.fence_at[fence.body_start : fence.close_start] = [number] * (
                fence.close_start - fence.body_start
            )
            _mark(self.no_end, fence.open_at + 1, fence.body_start + 1)
            _mark(self.no_end, fence.close_start, fence.close_end)
            _mark(self.no_start, fence.close_start, fence.close_end)
        self.guarded = bytearray(size)  # strictly inside a mention, URL, code span, ...
        for match in _GUARDED.finditer(text):
            _mark(self.guarded, match.start() + 1, match.end())
        self.runs = _runs(text)
        self.run_starts = [run.start for run in self.runs]

    def prefix(self, start: int) -> str:
        """The fence opener a chunk starting at ``start`` begins with ("" outside code)."""
        fence = self.fence_at[start]
        return self.fences[fence].reopen if fence >= 0 else ""

    def suffix(self, resume: int) -> str:
        """The fence closer a chunk ends with when the next one resumes at ``resume``."""
        fence = self.fence_at[resume]
        return self.fences[fence].close if fence >= 0 else ""

    def first_start(self) -> int:
        """Where the first chunk starts: after leading blank lines, keeping indentation."""
        stripped = len(self.text) - len(self.text.lstrip())
        return self.skip_indent(self.text.rfind("\n", 0, stripped) + 1)

    def skip_indent(self, start: int) -> int:
        """``start``, or the line's first visible character if indentation takes half the room."""
        spaces = _SPACE.match(self.text, start)
        visible = spaces.end() if spaces else start
        room = self.limit - len(self.prefix(start))
        return visible if visible - start >= max(room // 2, 1) else start

    def allowed(self, end: int, resume: int, start: int, room: int, guards: bool) -> bool:
        """Whether a chunk from ``start`` may end at ``end`` and the next resume at ``resume``."""
        return (
            not self.no_end[end]
            and not self.no_start[resume]
            and not (guards and self.guarded[end])
            and end - start + len(self.suffix(resume)) <= room
        )

    def cut(self, start: int) -> tuple[int, int]:
        """Where the chunk starting at ``start`` ends, and where the next one starts."""
        room = self.limit - len(self.prefix(start))
        low = bisect.bisect_right(self.run_starts, start)
        high = bisect.bisect_right(self.run_starts, start + room)
        window = self.runs[low:high][::-1]
        for guards in (True, False):
            for least in (start + room // 2, start + 1):
                for level in range(4):
                    for run in window:
                        if (
                            run.level <= level
                            and run.start >= least
                            and self.allowed(run.start, run.resume, start, room, guards)
                        ):
                            return run.start, run.resume
            for end in self._hard_cuts(start, room, graphemes=True):
                if self.allowed(end, end, start, room, guards):
                    return end, end
        for end in self._hard_cuts(start, room, graphemes=False):
            if self.allowed(end, end, start, room, guards=False):
                return end, end
        raise AssertionError(f"no cut for the chunk at {start}")  # pragma: no cover

    def _hard_cuts(self, start: int, room: int, graphemes: bool) -> Iterable[int]:
        """Positions inside words, last first; with ``graphemes`` none inside a cluster."""
        text = self.text
        for end in range(min(start + room, len(text) - 1), start, -1):
            if text[end - 1].isspace() or text[end].isspace():
                continue
            if graphemes and (
                _is_joined(text[end])
                or text[end - 1] == "\u200d"
                or (_is_regional(text[end]) and _regional_run(text, start, end) % 2 == 1)
            ):
                continue
            yield end


def _mark(flags: bytearray, start: int, end: int) -> None:
    if end > start:
        flags[start:end] = b"\x01" * (end - start)


def _regional_run(text: str, start: int, end: int) -> int:
    """How many regional indicators (flag halves) directly precede ``end``, from ``start``."""
    count = 0
    while end - count > start and _is_regional(text[end - count - 1]):
        count += 1
    return count


# ---------------------------------------------------------------------------- splitting


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split a reply into chunks of at most ``limit`` characters each.

    Cuts prefer paragraph boundaries, then line breaks, then sentence ends, then spaces
    (within the second half of the room left, then anywhere), and hard-cut only text
    without any; the whitespace at a cut is dropped, except the indentation of the line
    that starts the next chunk. A fenced code block cut in two is closed with its
    backticks at the end of the chunk and reopened with its opener line at the start of
    the next one; these added lines count toward ``limit``. Text that fits is returned
    unchanged as one chunk; blank text gives no chunk at all.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if not text.strip():
        return []
    if len(text) <= limit:
        return [text]
    layout = _Layout(text, limit)
    chunks: list[str] = []
    start = layout.first_start()
    stop = len(text.rstrip())
    while True:
        prefix = layout.prefix(start)
        if len(prefix) + stop - start <= limit:
            chunks.append(prefix + text[start:stop])
            return chunks
        end, resume = layout.cut(start)
        chunks.append(prefix + text[start:end] + layout.suffix(resume))
        start = layout.skip_indent(resume)


# ---------------------------------------------------------------------------- mentions

_NO_NAMES: Mapping[int, str] = MappingProxyType({})
_MENTION = re.compile(r"<(@[!&]?|#)(\d+)>")
_LEADING_PUNCTUATION = ",:;-–—"


def strip_own_mention(text: str, bot_id: int) -> str:
    """``text`` without the bot's own mentions (``<@id>`` and ``<@!id>``).

    Leading mentions go with the whitespace and the punctuation (``,`` ``:`` ``;`` or a
    dash) after them, so ``"<@1>, hi"`` gives ``"hi"``; elsewhere a mention goes with
    the spaces around it, leaving one space between words. Other mentions stay.
    """
    token = rf"<@!?{int(bot_id)}>"
    punctuation = re.escape(_LEADING_PUNCTUATION)
    text = re.sub(rf"\A\s*(?:{token}\s*(?:[{punctuation}]\s*)?)+", "", text)
    return re.sub(rf"([ \t]*){token}([ \t]*)", _join_around, text)


def _join_around(match: re.Match[str]) -> str:
    """One space where a removed mention separated two words, else nothing."""
    string, start, end = match.string, match.start(), match.end()
    before = string[start - 1] if start > 0 else ""
    after = string[end] if end < len(string) else ""
    words = (
        before
        and after
        and not before.isspace()
        and not after.isspace()
        and not unicodedata.category(after).startswith("P")
    )
    return " " if words and (match.group(1) or match.group(2)) else ""


def readable_mentions(
    text: str,
    names: Mapping[int, str],
    roles: Mapping[int, str] = _NO_NAMES,
    channels: Mapping[int, str] = _NO_NAMES,
) -> str:
    """Mention tokens as the names they stand for, so the model reads ``@Ana`` not ids.

    ``<@id>`` and ``<@!id>`` become ``@name`` from ``names``, ``<@&id>`` ``@role`` from
    ``roles`` and ``<#id>`` ``#channel`` from ``channels``; a name's whitespace (line
    breaks included) is collapsed to single spaces. Ids not in the mappings, and names
    blank after that, leave their token as it is.
    """

    def replace(match: re.Match[str]) -> str:
        kind, number = match.group(1), int(match.group(2))
        table = roles if kind == "@&" else channels if kind == "#" else names
        name = " ".join(table.get(number, "").split())
        return f"{kind[0]}{name}" if name else match.group()

    return _MENTION.sub(replace, text)
