"""Model Markdown to Telegram HTML (``parse_mode="HTML"``), and message splitting.

Replies come from the language model in light Markdown. :func:`to_html` turns the
markup botkit understands into the HTML subset of the Bot API and escapes everything
else, so the model's own ``<img>`` or ``a < b`` shows as text; its output is always
well-formed (tags balanced and nested, ``&`` only in entities).

A message holds at most :data:`MESSAGE_LIMIT` characters counted in UTF-16 code units
of the *visible* text (tags not counted, ``&lt;`` counts as one). :func:`split_html`
cuts a longer reply into chunks that each fit, preferring paragraph boundaries, then
line breaks, then sentence ends, then spaces, and only then a hard cut; never inside a
tag, an entity or an astral character. Tags open at a cut are closed at the end of the
chunk and reopened at the start of the next, so every chunk is well-formed on its own.

:func:`to_plain` and :func:`split_plain` serve the plain-text fallback for when Telegram
rejects a message's entities.
"""

from __future__ import annotations

import bisect
import html
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MESSAGE_LIMIT", "split_html", "split_plain", "to_html", "to_plain", "visible_length"]

MESSAGE_LIMIT = 4096
"""The Bot API's limit on a message's text, in UTF-16 code units after entity parsing."""

# ---------------------------------------------------------------------------- pieces
# Output is assembled from pieces ``(kind, tag name, source)`` and serialized once, which
# drops empty elements and a tag nested in itself (``# **Title**`` gives one ``<b>``).

_Kind = Literal["text", "open", "close"]
_Piece = tuple[_Kind, str, str]


def _text(source: str) -> _Piece:
    return ("text", "", source)


def _open(name: str, source: str | None = None) -> _Piece:
    return ("open", name, source if source is not None else f"<{name}>")


def _close(name: str) -> _Piece:
    return ("close", name, f"</{name}>")


def _wrap(name: str, inner: list[_Piece], source: str | None = None) -> list[_Piece]:
    return [_open(name, source), *inner, _close(name)]


def _serialize(pieces: list[_Piece]) -> str:
    """Join balanced pieces, leaving out empty elements and tags already open."""
    out: list[_Piece] = []
    stack: list[tuple[str, bool]] = []  # (name, emitted)
    for piece in pieces:
        kind, name, source = piece
        if kind == "open":
            emitted = all(open_name != name for open_name, _ in stack)
            stack.append((name, emitted))
            if emitted:
                out.append(piece)
        elif kind == "close":
            if stack.pop()[1]:
                if out[-1][0] == "open":  # nothing inside: drop the element
                    out.pop()
                else:
                    out.append(piece)
        elif source:
            out.append(piece)
    return "".join(source for _, _, source in out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return _escape(text).replace('"', "&quot;")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# ---------------------------------------------------------------------------- inline

_LINK = re.compile(r"\[([^\[\]\n]+)\]\(((?:[^\s()<>]|\([^\s()<>]*\))+)\)")
_SAFE_URL = re.compile(r"(?:https?|tg)://[^\s/]", re.IGNORECASE)
_EMPHASIS_CHARS = "*_~"


@dataclass
class _Delimiter:
    """A run of ``*``, ``_`` or ``~`` that may open or close emphasis."""

    char: str
    count: int
    can_open: bool
    can_close: bool
    position: int
    opens: list[str] = field(default_factory=list)  # outermost first
    closes: list[str] = field(default_factory=list)  # innermost first

    def pieces(self) -> list[_Piece]:
        literal = [_text(self.char * self.count)] if self.count else []
        return [*map(_close, self.closes), *literal, *map(_open, self.opens)]


def _is_word(char: str) -> bool:
    """Letters and digits, except East Asian wide ones (written without spaces)."""
    return char.isalnum() and unicodedata.east_asian_width(char) not in ("W", "F")


def _run_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and text[end] == text[start]:
        end += 1
    return end


def _find_backtick_run(text: str, start: int, length: int) -> int | None:
    """Where the next run of exactly ``length`` backticks from ``start`` begins."""
    position = text.find("`", start)
    while position != -1:
        end = _run_end(text, position)
        if end - position == length:
            return position
        position = text.find("`", end)
    return None


def _code_span(text: str, start: int) -> tuple[list[_Piece], int] | None:
    """``code`` (any backtick run length, CommonMark style) at ``start``, or None."""
    after_open = _run_end(text, start)
    length = after_open - start
    closing = _find_backtick_run(text, after_open, length)
    if closing is None:
        return None
    content = text[after_open:closing]
    if not content.strip():
        return None
    if len(content) >= 2 and content[0] == content[-1] == " ":
        content = content[1:-1]
    return _wrap("code", [_text(_escape(content))]), closing + length


def _link(text: str, start: int) -> tuple[list[_Piece], int] | None:
    """``[text](url)`` at ``start`` for http, https and tg URLs only, or None."""
    match = _LINK.match(text, start)
    if match is None or not match.group(1).strip() or not _SAFE_URL.match(match.group(2)):
        return None
    source = f'<a href="{_escape_attr(match.group(2))}">'
    return _wrap("a", _inline(match.group(1)), source), match.end()


def _delimiter(text: str, start: int) -> tuple[_Delimiter | None, int]:
    """The delimiter run at ``start``; None where it can neither open nor close."""
    end = _run_end(text, start)
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    can_open = not after.isspace() and not _is_word(before)
    can_close = not before.isspace() and not _is_word(after)
    if text[start] == "~" and end - start < 2:
        can_open = can_close = False
    if not (can_open or can_close):
        return None, end
    return _Delimiter(text[start], end - start, can_open, can_close, start), end


def _tokenize(text: str) -> list[_Delimiter | list[_Piece]]:
    """Code spans, links and escaped text as pieces; emphasis runs as delimiters."""
    tokens: list[_Delimiter | list[_Piece]] = []
    literal: list[str] = []

    def flush() -> None:
        if literal:
            tokens.append([_text(_escape("".join(literal)))])
            literal.clear()

    position = 0
    while position < len(text):
        char = text[position]
        found: tuple[list[_Piece], int] | None = None
        if char == "`":
            found = _code_span(text, position)
        elif char == "[":
            found = _link(text, position)
        elif char in _EMPHASIS_CHARS:
            delimiter, end = _delimiter(text, position)
            if delimiter is None:
                literal.append(text[position:end])
            else:
                flush()
                tokens.append(delimiter)
            position = end
            continue
        if found is None:
            end = _run_end(text, position) if char == "`" else position + 1
            literal.append(text[position:end])
            position = end
        else:
            flush()
            tokens.append(found[0])
            position = found[1]
    flush()
    return tokens


def _match_emphasis(tokens: list[_Delimiter | list[_Piece]]) -> None:
    """Pair delimiter runs (CommonMark's stack algorithm, one stack per character).

    A match removes every delimiter between opener and closer, so the resulting
    elements always nest properly; unmatched runs stay literal text.
    """
    stacks: dict[str, list[_Delimiter]] = {char: [] for char in _EMPHASIS_CHARS}
    for closer in tokens:
        if not isinstance(closer, _Delimiter):
            continue
        need = 2 if closer.char == "~" else 1
        stack = stacks[closer.char]
        while closer.can_close and closer.count >= need and stack:
            opener = stack[-1]
            if opener.count < need:
                stack.pop()
                continue
            used = 2 if opener.count >= 2 and closer.count >= 2 else 1
            tag = "s" if closer.char == "~" else "b" if used == 2 else "i"
            opener.count -= used
            closer.count -= used
            opener.opens.insert(0, tag)
            closer.closes.append(tag)
            for other in stacks.values():
                while other and other[-1].position > opener.position:
                    other.pop()
            if opener.count < need:
                stack.pop()
        if closer.can_open and closer.count >= need:
            stack.append(closer)


def _inline(text: str) -> list[_Piece]:
    """Inline Markdown (emphasis, strike, code, links) of one paragraph as pieces."""
    tokens = _tokenize(text)
    _match_emphasis(tokens)
    pieces: list[_Piece] = []
    for token in tokens:
        pieces.extend(token.pieces() if isinstance(token, _Delimiter) else token)
    return pieces


# ---------------------------------------------------------------------------- blocks

_FENCE = re.compile(r"([ \t]*)(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}[ \t]+(.*?\S)(?:[ \t]+#+)?[ \t]*")


def _closing_fence(lines: list[str], start: int, fence: str) -> int | None:
    """The index of the line closing ``fence`` (same character, at least as long)."""
    closing = re.compile(rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*")
    for index in range(start, len(lines)):
        if closing.fullmatch(lines[index]):
            return index
    return None


def _code_block(lines: list[str], indent: str, language: str) -> list[_Piece]:
    """``<pre>``, with ``<code class="language-x">`` inside when a language is given."""
    body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines)
    inner = [_text(_escape(body))]
    language = re.sub(r"[^\w+#.-]", "", language)
    if language:
        inner = _wrap("code", inner, f'<code class="language-{_escape_attr(language)}">')
    return _wrap("pre", inner)


def to_html(markdown: str) -> str:
    """Render the model's Markdown as Telegram HTML; everything else is escaped.

    ``**b**``/``__b__`` become ``<b>``, ``*i*``/``_i_`` ``<i>``, ``~~s~~`` ``<s>``,
    `` `c` `` ``<code>``, fenced blocks ``<pre>``, ``# headings`` ``<b>`` and
    ``[text](url)`` ``<a>`` for http, https and tg URLs only. Emphasis needs clear
    delimiting (not inside words, not next to a space on the inner side) and never
    crosses a blank line; unterminated markers stay literal text.
    """
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[_Piece]] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(_inline("\n".join(paragraph)))
            paragraph.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.fullmatch(line)
        end = _closing_fence(lines, index + 1, fence.group(2)) if fence else None
        heading = _HEADING.fullmatch(line)
        if fence and end is not None:
            flush()
            blocks.append(_code_block(lines[index + 1 : end], fence.group(1), fence.group(3)))
            index = end + 1
            continue
        if heading or not line.strip():
            flush()
            blocks.append(_wrap("b", _inline(heading.group(1))) if heading else [_text(line)])
        else:
            paragraph.append(line)
        index += 1
    flush()
    pieces: list[_Piece] = []
    for number, block in enumerate(blocks):
        if number:
            pieces.append(_text("\n"))
        pieces.extend(block)
    return _serialize(pieces)


# ---------------------------------------------------------------------------- reading HTML

_TOKEN = re.compile(
    r"(?P<tag></?[A-Za-z][\w-]*(?:\s[^<>]*)?>)"
    r"|(?P<entity>&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);)"
    r"|(?P<text>[^<&]+)"
    r"|(?P<other>[<&])"
)
_TAG_NAME = re.compile(r"</?([A-Za-z][\w-]*)")


@dataclass(frozen=True)
class _Atom:
    """A tag, or one unit of visible text (a character or a decoded entity)."""

    kind: _Kind
    name: str  # the tag's name; for text the visible unit
    source: str


def _atoms(markup: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    for match in _TOKEN.finditer(markup):
        source = match.group()
        if match.lastgroup == "tag":
            name = _TAG_NAME.match(source)
            assert name is not None
            if source.endswith("/>"):  # self-closing: keep it where it is
                atoms.append(_Atom("text", "", source))
            else:
                kind: _Kind = "close" if source[1] == "/" else "open"
                atoms.append(_Atom(kind, name.group(1).lower(), source))
        elif match.lastgroup == "entity":
            atoms.append(_Atom("text", html.unescape(source), source))
        else:
            atoms.extend(_Atom("text", char, char) for char in source)
    return atoms


def to_plain(html_text: str) -> str:
    """The text Telegram shows for ``html_text``: tags removed, entities decoded."""
    return "".join(atom.name for atom in _atoms(html_text) if atom.kind == "text")


def visible_length(html_text: str) -> int:
    """The length Telegram counts for ``html_text``: UTF-16 code units of the visible text."""
    return _utf16_len(to_plain(html_text))


# ---------------------------------------------------------------------------- splitting

_BOUNDARIES = (
    re.compile(r"\n[^\S\n]*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?])\s"),  # sentence
    re.compile(r"\s"),  # word
)
_JOINERS = frozenset("\u200d\ufe0e\ufe0f") | {chr(c) for c in range(0x1F3FB, 0x1F400)}


def _last_boundary(flat: str, low: int, high: int) -> int | None:
    """The preferred cut in ``[low, high]``: the whitespace where the chunk ends."""
    for pattern in _BOUNDARIES:
        last = None
        for match in pattern.finditer(flat, low, high + 2):  # a cut's whitespace is in range
            if match.start() <= high:
                last = match.start()
        if last is not None:
            return last
    return None


def _hard_cut(flat: str, start: int, end: int) -> int:
    """``end``, moved back so as not to separate combining marks, ZWJ and modifiers."""
    cut = end
    while cut > start + 1 and (
        flat[cut] in _JOINERS
        or flat[cut - 1] == "\u200d"
        or unicodedata.category(flat[cut]) in ("Mn", "Me", "Mc")
    ):
        cut -= 1
    return cut


def _plan(units: list[str], limit: int) -> list[tuple[int, int]]:
    """Split visible units into spans ``[start, end)`` of at most ``limit`` UTF-16 units.

    Whitespace around each cut belongs to no span; no span is empty or blank.
    """
    prefix = [0]
    for unit in units:
        prefix.append(prefix[-1] + _utf16_len(unit))
    flat = "".join(unit if len(unit) == 1 else "\ufffc" for unit in units)
    spans: list[tuple[int, int]] = []
    start = len(flat) - len(flat.lstrip())
    while start < len(flat):
        if prefix[-1] - prefix[start] <= limit:
            cut = len(flat)
        else:
            end = max(bisect.bisect_right(prefix, prefix[start] + limit) - 1, start + 1)
            cut = (
                _last_boundary(flat, start + (end - start) // 2, end)
                or _last_boundary(flat, start + 1, end)
                or _hard_cut(flat, start, end)
            )
        stop = cut
        while flat[stop - 1].isspace():
            stop -= 1
        spans.append((start, stop))
        start = cut
        while start < len(flat) and flat[start].isspace():
            start += 1
    return spans


def _check_limit(limit: int) -> None:
    if limit < 2:
        raise ValueError(f"limit must be at least 2 (one astral character), not {limit}")


def split_plain(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split plain text into chunks of at most ``limit`` UTF-16 units (rules as split_html).

    Text that fits is returned whole; blank text gives no chunk at all.
    """
    _check_limit(limit)
    if not text.strip():
        return []
    if _utf16_len(text) <= limit:
        return [text]
    return [text[start:stop] for start, stop in _plan(list(text), limit)]


def split_html(html_text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split well-formed Telegram HTML into chunks of at most ``limit`` visible UTF-16 units.

    Cuts prefer paragraph boundaries, then line breaks, then sentence ends, then spaces
    (within the second half of the room left), and hard-cut only text without any; the
    whitespace at a cut is dropped. Tags open at a cut are closed at the end of the
    chunk and reopened, with their attributes, at the start of the next one. Markup
    that fits is returned whole; markup without visible text gives no chunk at all.
    """
    _check_limit(limit)
    atoms = _atoms(html_text)
    units = [atom.name for atom in atoms if atom.kind == "text"]
    if not "".join(units).strip():
        return []
    if _utf16_len("".join(units)) <= limit:
        return [html_text]
    chunk_of = [-1] * len(units)
    for number, (start, stop) in enumerate(_plan(units, limit)):
        chunk_of[start:stop] = [number] * (stop - start)

    chunks: list[list[_Piece]] = [[]]
    stack: list[_Piece] = []
    position = 0
    for atom in atoms:
        if atom.kind == "open":
            stack.append(("open", atom.name, atom.source))
            chunks[-1].append(stack[-1])
        elif atom.kind == "close":
            if stack and stack[-1][1] == atom.name:  # a stray close tag is dropped
                stack.pop()
                chunks[-1].append(_close(atom.name))
        else:
            number = chunk_of[position]
            position += 1
            if number < 0:
                continue
            if number == len(chunks):
                chunks[-1].extend(_close(name) for _, name, _ in reversed(stack))
                chunks.append(list(stack))
            chunks[-1].append(_text(atom.source))
    chunks[-1].extend(_close(name) for _, name, _ in reversed(stack))
    return [_serialize(chunk) for chunk in chunks]
