"""Discord rendering: splitting replies into messages, and mention tokens."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botkit_discord.render import (
    MESSAGE_LIMIT,
    readable_mentions,
    split_message,
    strip_own_mention,
)

# ---------------------------------------------------------------------------- checkers

_FENCE_LINE = re.compile(r"[ \t]*```")


def _squeeze(text: str) -> str:
    return "".join(text.split())


def assert_balanced(chunk: str) -> None:
    """Fail unless the chunk's fence lines pair up: opener, then a bare closing ```."""
    fences = [line.strip() for line in chunk.split("\n") if _FENCE_LINE.match(line)]
    assert len(fences) % 2 == 0, f"unbalanced fences in {chunk!r}"
    assert all(closer == "```" for closer in fences[1::2]), f"bad closer in {chunk!r}"


def _openers(text: str) -> list[tuple[int, int, str]]:
    """``(body start, closing line start, opener line)`` of each fence of well-formed text."""
    fences: list[tuple[int, int, str]] = []
    opener: tuple[int, str] | None = None
    position = 0
    for line in text.split("\n"):
        if _FENCE_LINE.match(line):
            if opener is None:
                opener = (position + len(line) + 1, line.strip())
            else:
                fences.append((opener[0], position, opener[1]))
                opener = None
        position += len(line) + 1
    return fences


def _open_fence(fences: list[tuple[int, int, str]], position: int) -> str | None:
    for body_start, close_start, opener in fences:
        if body_start <= position < close_start:
            return opener
    return None


def _find_after_whitespace(text: str, body: str, position: int) -> int | None:
    """Where ``body`` occurs in ``text`` after nothing but whitespace from ``position``."""
    while not text.startswith(body, position):
        if position >= len(text) or not text[position].isspace():
            return None
        position += 1
    return position


def carried_text(text: str, chunks: list[str]) -> list[str]:
    """The original text each chunk carries, without the fence lines the splitter added.

    Fails unless the chunks are consecutive pieces of ``text`` apart from whitespace at
    the cuts, and every added closer is followed by the same fence reopened.
    """
    fences = _openers(text)
    bodies: list[str] = []
    position = 0
    reopen: str | None = None  # the opener line the next chunk must start with
    for chunk in chunks:
        if reopen is not None:
            assert chunk.startswith(reopen + "\n"), f"{chunk!r} does not reopen {reopen!r}"
            chunk = chunk[len(reopen) + 1 :]
        found = _find_after_whitespace(text, chunk, position)
        reopen = None
        if found is None and chunk.endswith("\n```"):
            chunk = chunk[: -len("\n```")]
            found = _find_after_whitespace(text, chunk, position)
            assert found is not None, f"{chunk!r} is not the text after {position}"
            reopen = _open_fence(fences, found + len(chunk))
            assert reopen is not None, f"a closer added outside code after {chunk!r}"
        assert found is not None, f"{chunk!r} is not the text after {position}"
        bodies.append(chunk)
        position = found + len(chunk)
    assert reopen is None, "the last chunk closed a fence the text leaves open"
    assert not text[position:].strip(), f"text left over: {text[position:]!r}"
    return bodies


def assert_good_split(text: str, chunks: list[str], limit: int) -> None:
    for chunk in chunks:
        assert len(chunk) <= limit, f"{len(chunk)} > {limit}: {chunk!r}"
        assert chunk.strip(), "blank chunk"
        assert_balanced(chunk)
    bodies = carried_text(text, chunks)
    assert _squeeze("".join(bodies)) == _squeeze(text)


# ---------------------------------------------------------------------------- examples


def _prose(number: int, sentences: int) -> str:
    return " ".join(
        f"Sentence {number}.{k} explains how botkit answers on Discord 🤖 clearly."
        for k in range(sentences)
    )


def _long_reply() -> str:
    """About 4,500 characters; the code block runs across the first 2,000-character cut."""
    code = "\n".join(
        f"def step_{n}(value: int) -> int:\n    return value * {n} + {n}  # step {n}"
        for n in range(24)
    )
    reply = "\n\n".join(
        [
            _prose(0, 8),
            _prose(1, 5),
            "Here is the code:",
            f"```python\n{code}\n```",
            _prose(2, 8),
            _prose(3, 8),
            _prose(4, 9),
            _prose(5, 6),
        ]
    )
    assert 4_400 <= len(reply) <= 4_600
    assert 1_000 < reply.index("```python") + 1_000 < 2_000 < reply.rindex("```")
    return reply


def test_text_that_fits_stays_unchanged() -> None:
    text = " Hello <@12>, **this** fits.\n```py\nx = 1\n```\n"
    assert split_message(text) == [text]
    assert split_message("x" * MESSAGE_LIMIT) == ["x" * MESSAGE_LIMIT]


def test_blank_text_gives_no_chunk() -> None:
    assert split_message("") == []
    assert split_message(" \n\n\t ") == []


def test_long_reply_splits_with_the_code_block_closed_and_reopened() -> None:
    reply = _long_reply()
    chunks = split_message(reply)
    assert len(chunks) == 3
    for chunk in chunks:
        assert len(chunk) <= MESSAGE_LIMIT
        fence_lines = [line for line in chunk.split("\n") if line.startswith("```")]
        assert len(fence_lines) % 2 == 0
    assert chunks[0].endswith("\n```")
    assert chunks[1].startswith("```python\n")
    assert not chunks[2].startswith("```")
    assert "".join(chunks).count("```python\n") == reply.count("```python\n") + 1
    joined = chunks[0].removesuffix("\n```") + "\n" + chunks[1].removeprefix("```python\n")
    assert _squeeze(joined + chunks[2]) == _squeeze(reply)
    assert_good_split(reply, chunks, MESSAGE_LIMIT)


def test_split_prefers_paragraphs_then_lines_then_sentences_then_spaces() -> None:
    assert split_message("aaaa bbbb. cccc\ndddd\n\neeee ffff", 26) == [
        "aaaa bbbb. cccc\ndddd",
        "eeee ffff",
    ]
    assert split_message("aaaa bbbb. cccc\ndddd eeee ffff", 22) == [
        "aaaa bbbb. cccc",
        "dddd eeee ffff",
    ]
    assert split_message("aaaa bbbb. cccc dddd eeee", 18) == ["aaaa bbbb.", "cccc dddd eeee"]
    assert split_message('aaaa "bbbb." cccc dddd eeee', 20) == ['aaaa "bbbb."', "cccc dddd eeee"]
    assert split_message("aaaa bbbb cccc dddd", 12) == ["aaaa bbbb", "cccc dddd"]


def test_split_ignores_a_boundary_that_would_leave_a_tiny_chunk() -> None:
    assert split_message("a\n\nbbbb cccc dddd eeee", 12) == ["a\n\nbbbb cccc", "dddd eeee"]


def test_code_keeps_its_indentation_across_a_cut() -> None:
    text = "Look:\n\n```python\ndef f(x):\n    if x:\n        return 1\n    return 2\n```\nDone."
    chunks = split_message(text, 45)
    assert chunks == [
        "Look:\n\n```python\ndef f(x):\n    if x:\n```",
        "```python\n        return 1\n    return 2\n```",
        "Done.",
    ]
    assert_good_split(text, chunks, 45)


def test_fence_without_language_reopens_bare() -> None:
    text = "```\n" + "\n".join(f"line {n}" for n in range(12)) + "\n```"
    chunks = split_message(text, 40)
    assert len(chunks) > 1
    assert all(chunk.startswith("```\nline") for chunk in chunks)
    assert all(chunk.endswith("\n```") for chunk in chunks)
    assert_good_split(text, chunks, 40)


def test_a_cut_never_leaves_an_empty_code_block() -> None:
    text = "x" * 20 + "\n```python\n" + "y" * 30 + "\n```\n" + "z" * 20
    chunks = split_message(text, 40)
    assert_good_split(text, chunks, 40)
    assert not any(chunk.rstrip().endswith("```python") for chunk in chunks)
    assert not any(re.match(r"```python\n```", chunk) for chunk in chunks)


def test_unclosed_fence_is_plain_text() -> None:
    text = "```python\n" + "word " * 20
    chunks = split_message(text, 40)
    assert all(len(chunk) <= 40 for chunk in chunks)
    assert not any(chunk.endswith("\n```") for chunk in chunks)
    assert _squeeze("".join(chunks)) == _squeeze(text)


def test_cuts_avoid_mentions_urls_and_links() -> None:
    assert split_message("x" * 30 + "<@123456789>" + "y" * 30, 40) == [
        "x" * 30,
        "<@123456789>" + "y" * 28,
        "yy",
    ]
    url = "https://example.com/some/long/path?with=query"
    assert split_message("x" * 10 + url + " tail", 50) == ["x" * 10, url + " tail"]
    link = "[the full documentation page](https://example.com/docs)"
    assert split_message(f"Read it all here: {link} now.", 70) == [
        "Read it all here:",
        f"{link} now.",
    ]
    code = "`git commit --amend --no-edit`"
    assert split_message(f"Say {code} to fix it", 30) == ["Say", code, "to fix it"]
    assert split_message("A ||big secret here|| revealed", 20) == [
        "A",
        "||big secret here||",
        "revealed",
    ]


def test_a_token_longer_than_the_limit_is_still_cut() -> None:
    url = "https://example.com/" + "a" * 100
    chunks = split_message(url, 40)
    assert [len(chunk) for chunk in chunks] == [40, 40, 40]
    assert "".join(chunks) == url


def test_hard_cut_keeps_characters_together() -> None:
    assert split_message("abce\u0301fg", 4) == ["abc", "e\u0301fg"]
    family = "👨\u200d👩\u200d👧"
    assert split_message("ab" + family, 5) == ["ab", family]
    assert split_message("a🇫🇷🇩🇪", 4) == ["a🇫🇷", "🇩🇪"]
    assert split_message("a👍🏽b", 2) == ["a", "👍🏽", "b"]
    assert split_message("x" * 9, 4) == ["xxxx", "xxxx", "x"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("abc", 0)


# ---------------------------------------------------------------------------- mentions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<@42> hello", "hello"),
        ("<@!42>, what's up?", "what's up?"),
        ("  <@42>: hi <@7>", "hi <@7>"),
        ("<@42> <@!42> - twice", "twice"),
        ("<@42>", ""),
        ("hey <@42> how are you", "hey how are you"),
        ("thanks <@42>!", "thanks!"),
        ("ask <@42>\nplease", "ask\nplease"),
        ("<@7> and <@42> and <@!7>", "<@7> and and <@!7>"),
        ("<@420> and <@4> stay", "<@420> and <@4> stay"),
        ("<@&42> is a role, <#42> a channel", "<@&42> is a role, <#42> a channel"),
    ],
)
def test_strip_own_mention(text: str, expected: str) -> None:
    assert strip_own_mention(text, 42) == expected


def test_readable_mentions() -> None:
    text = "<@1> and <@!2> in <#3> ping <@&4>; <@5> <#6> <@&7> stay"
    readable = readable_mentions(
        text, {1: "Ana", 2: "Bo\nBertsen"}, roles={4: "mods"}, channels={3: "general"}
    )
    assert readable == "@Ana and @Bo Bertsen in #general ping @mods; <@5> <#6> <@&7> stay"


def test_readable_mentions_keeps_tokens_without_a_usable_name() -> None:
    assert readable_mentions("<@1> <@2>", {1: " \n ", 2: "Ana"}) == "<@1> @Ana"
    assert readable_mentions("<@&1> <#1>", {1: "user"}) == "<@&1> <#1>"


# ---------------------------------------------------------------------------- properties

_WORDS = [
    "botkit", "Discord", "answer.", "why?", "yes!", "@everyone", "@here", "<@123456789012>",
    "<@!42>", "<#987654321>", "<@&55>", "<:blob:123456>", "<t:1700000000:R>", "😀", "🤖",
    "👨\u200d👩\u200d👧", "🇫🇷", "👍🏽", "e\u0301", "中文字", "**bold**", "*it*", "||secret||",
    "`x = 1`", "https://example.com/a_b?x=1&y=2", "<https://example.com/no-embed>",
    "[the docs](https://example.com/docs)", "x" * 45, "supercalifragilistic",
]  # fmt: skip
_word = st.one_of(
    st.sampled_from(_WORDS),
    st.text(st.characters(exclude_characters="`", exclude_categories=("Cs",)), max_size=10),
)
_line = st.lists(_word, min_size=1, max_size=14).map(" ".join)
_paragraph = st.lists(_line, min_size=1, max_size=4).map("\n".join)
_code_line = st.tuples(st.sampled_from(["", "  ", "    ", "        "]), _line).map("".join)
_code_block = st.tuples(
    st.sampled_from(["", "python", "js", "c++"]),
    st.lists(st.one_of(_code_line, st.just("")), min_size=1, max_size=10),
).map(lambda parts: f"```{parts[0]}\n" + "\n".join(parts[1]) + "\n```")
_block = st.one_of(_paragraph, _paragraph, _code_block)
_separator = st.sampled_from(["\n\n", "\n", "\n\n\n", "\n \n"])


@st.composite
def _replies(draw: st.DrawFn) -> str:
    blocks = draw(st.lists(_block, min_size=1, max_size=8))
    text = blocks[0]
    for block in blocks[1:]:
        text += draw(_separator) + block
    return draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", "\n"]))


@settings(max_examples=200, deadline=None)
@given(_replies(), st.integers(40, 400))
def test_chunks_fit_stay_balanced_and_keep_the_text(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    if len(text) <= limit:
        assert chunks == ([text] if text.strip() else [])
    assert_good_split(text, chunks, limit)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_word, _separator), max_size=80).map("".join), st.integers(1, 60))
def test_any_text_without_fences_splits_within_the_limit(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    for chunk in chunks:
        assert chunk.strip()
        assert len(chunk) <= limit
    assert _squeeze("".join(chunks)) == _squeeze(text)
