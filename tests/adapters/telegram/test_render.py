"""Telegram rendering: model Markdown to Bot API HTML, and splitting into messages."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botkit_telegram.render import (
    MESSAGE_LIMIT,
    split_html,
    split_plain,
    to_html,
    to_plain,
    visible_length,
)

# ---------------------------------------------------------------------------- checker

_ATTRIBUTES: dict[str, set[str]] = {
    "b": set(),
    "i": set(),
    "u": set(),
    "s": set(),
    "code": {"class"},
    "pre": set(),
    "a": {"href"},
    "blockquote": set(),
    "tg-spoiler": set(),
}
_ENTITY = re.compile(r"&(?:amp|lt|gt|quot|#[0-9]+|#x[0-9a-fA-F]+);")


class _TelegramHTMLChecker(HTMLParser):
    """Accepts only what Telegram's HTML parse mode accepts; records every problem."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        source = self.get_starttag_text() or ""
        if tag not in _ATTRIBUTES:
            self.problems.append(f"unknown tag {source!r}")
        elif any(name not in _ATTRIBUTES[tag] for name, _ in attrs):
            self.problems.append(f"unexpected attribute in {source!r}")
        elif tag == "a" and not attrs:
            self.problems.append("link without href")
        elif tag == "code" and attrs and not re.fullmatch(r"language-[\w+#.-]+", attrs[0][1] or ""):
            self.problems.append(f"bad code class {source!r}")
        if tag in self.stack:
            self.problems.append(f"{tag} nested in itself")
        if self.stack and self.stack[-1] == "code":
            self.problems.append(f"{tag} inside code")
        if self.stack and self.stack[-1] == "pre" and tag != "code":
            self.problems.append(f"{tag} inside pre")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.append(f"self-closing {tag}")

    def handle_data(self, data: str) -> None:
        if any(char in data for char in "<>&"):
            self.problems.append(f"unescaped text {data!r}")

    def handle_entityref(self, name: str) -> None:
        if name not in ("amp", "lt", "gt", "quot"):
            self.problems.append(f"entity &{name};")

    def handle_comment(self, data: str) -> None:
        self.problems.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.problems.append("declaration")

    def handle_pi(self, data: str) -> None:
        self.problems.append("processing instruction")

    def unknown_decl(self, data: str) -> None:
        self.problems.append("unknown declaration")


def assert_telegram_html(markup: str) -> None:
    """Fail unless ``markup`` is well-formed HTML made of Telegram's tags only."""
    bare = _ENTITY.sub("", markup)
    assert "&" not in bare, f"bare & in {markup!r}"
    checker = _TelegramHTMLChecker()
    checker.feed(markup)
    checker.close()
    assert not checker.problems, f"{checker.problems} in {markup!r}"
    assert not checker.stack, f"unclosed {checker.stack} in {markup!r}"


def _squeeze(text: str) -> str:
    return "".join(text.split())


# ---------------------------------------------------------------------------- to_html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*italic* and _italic_", "<i>italic</i> and <i>italic</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("use `x < 1`", "use <code>x &lt; 1</code>"),
        ("``a ` tick``", "<code>a ` tick</code>"),
        ("***both***", "<i><b>both</b></i>"),
        ("*a **b** c*", "<i>a <b>b</b> c</i>"),
        ("**重要**的是", "<b>重要</b>的是"),
        ("# Title with **bold**", "<b>Title with bold</b>"),
        ("## Sub ##\ntext", "<b>Sub</b>\ntext"),
        ("**over\ntwo lines**", "<b>over\ntwo lines</b>"),
    ],
)
def test_inline_markup(markdown: str, expected: str) -> None:
    assert to_html(markdown) == expected
    assert_telegram_html(expected)


def test_fenced_blocks_become_pre() -> None:
    markdown = 'Look:\n```python\nif a < b:\n    print("&")\n```\n```\nplain\n```'
    assert to_html(markdown) == (
        'Look:\n<pre><code class="language-python">if a &lt; b:\n    print("&amp;")'
        "</code></pre>\n<pre>plain</pre>"
    )


def test_markdown_inside_code_stays_literal() -> None:
    assert to_html("`**not bold**`") == "<code>**not bold**</code>"
    assert to_html("```\n**not bold** [x](https://e.com)\n```") == (
        "<pre>**not bold** [x](https://e.com)</pre>"
    )


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("[docs](https://e.com/a?b=1&c=2)", '<a href="https://e.com/a?b=1&amp;c=2">docs</a>'),
        ("[wiki](http://e.org/Foo_(bar))", '<a href="http://e.org/Foo_(bar)">wiki</a>'),
        ("[me](tg://user?id=42)", '<a href="tg://user?id=42">me</a>'),
        ("[**bold** link](https://e.com)", '<a href="https://e.com"><b>bold</b> link</a>'),
    ],
)
def test_links(markdown: str, expected: str) -> None:
    assert to_html(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    [
        "[click](javascript:alert(1))",
        "[click](JavaScript:alert(document.cookie))",
        "[file](file:///etc/passwd)",
        "[data](data:text/html,hi)",
        "[rel](/relative/path)",
    ],
)
def test_unsafe_links_stay_text(markdown: str) -> None:
    rendered = to_html(markdown)
    assert "<a" not in rendered
    assert to_plain(rendered) == markdown


def test_raw_html_is_escaped() -> None:
    rendered = to_html("<img src=x onerror=alert(1)> <b>hi</b>")
    assert rendered == "&lt;img src=x onerror=alert(1)&gt; &lt;b&gt;hi&lt;/b&gt;"
    assert_telegram_html(rendered)


def test_comparisons_are_escaped() -> None:
    assert to_html("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"


@pytest.mark.parametrize(
    "markdown",
    ["snake_case_name", "call my_func_name(x_1, y_2)", "2*3*4", "5 * 3 = 15", "* item\n* item"],
)
def test_word_internal_and_lone_markers_are_untouched(markdown: str) -> None:
    assert to_html(markdown) == markdown


@pytest.mark.parametrize(
    "markdown",
    ["**bold", "*italic", "__bold", "~~strike", "`code", "```python\nno end", "[x](https://e.com"],
)
def test_unterminated_markers_stay_literal(markdown: str) -> None:
    assert to_html(markdown) == markdown


def test_emphasis_does_not_cross_blank_lines() -> None:
    assert to_html("**one\n\ntwo**") == "**one\n\ntwo**"


def test_many_unmatched_markers_are_linear() -> None:
    markdown = "`` " + "*a _b ~~c [d](e " * 5_000
    assert to_plain(to_html(markdown)) == markdown


# ---------------------------------------------------------------------------- plain text


def test_visible_length_counts_utf16_units_of_the_shown_text() -> None:
    assert visible_length('<b>a</b> &lt;<a href="https://e.com/?a&amp;b">x</a>') == 4
    assert visible_length("😀é") == 3
    assert visible_length("&#128512;") == 2


def test_to_plain_removes_tags_and_decodes_entities() -> None:
    assert to_plain('<pre><code class="language-py">a &lt; b &amp;&amp; c</code></pre>') == (
        "a < b && c"
    )


# ---------------------------------------------------------------------------- splitting


def _long_reply() -> str:
    paragraphs: list[str] = []
    number = 0
    while sum(len(paragraph) + 2 for paragraph in paragraphs) < 10_000:
        sentences = [
            f"Point {number}.{k} is about **botkit** answering on Telegram 🤖 in detail."
            for k in range(7)
        ]
        if number == 4:
            sentences.append("See [the docs](https://example.com/docs?page=1&lang=en) too.")
        paragraphs.append(" ".join(sentences))
        number += 1
    return "\n\n".join(paragraphs)


def test_long_reply_splits_into_three_chunks_at_paragraphs() -> None:
    reply = _long_reply()
    assert 10_000 <= len(reply) < 10_600
    rendered = to_html(reply)
    chunks = split_html(rendered)
    assert len(chunks) == 3
    for chunk in chunks:
        assert visible_length(chunk) <= MESSAGE_LIMIT
        assert_telegram_html(chunk)
    assert "\n\n".join(to_plain(chunk) for chunk in chunks) == to_plain(rendered)
    assert sum('<a href="https://example.com/docs?page=1&amp;lang=en">' in c for c in chunks) == 1


def test_split_reopens_open_tags_with_their_attributes() -> None:
    markup = '<b>bold <a href="https://e.com/?a&amp;b">' + "link " * 20 + "</a> end</b>"
    chunks = split_html(markup, 30)
    assert len(chunks) > 2
    for chunk in chunks:
        assert_telegram_html(chunk)
        assert chunk.startswith("<b>")
        assert chunk.endswith("</b>")
    assert all('<a href="https://e.com/?a&amp;b">' in chunk for chunk in chunks[:-1])


def test_split_prefers_paragraphs_then_lines_then_sentences_then_spaces() -> None:
    assert split_plain("aaaa bbbb. cccc\ndddd\n\neeee ffff", 26) == [
        "aaaa bbbb. cccc\ndddd",
        "eeee ffff",
    ]
    assert split_plain("aaaa bbbb. cccc\ndddd eeee ffff", 22) == [
        "aaaa bbbb. cccc",
        "dddd eeee ffff",
    ]
    assert split_plain("aaaa bbbb. cccc dddd eeee", 18) == ["aaaa bbbb.", "cccc dddd eeee"]
    assert split_plain("aaaa bbbb cccc dddd", 12) == ["aaaa bbbb", "cccc dddd"]


def test_split_ignores_a_boundary_that_would_leave_a_tiny_chunk() -> None:
    assert split_plain("a\n\nbbbb cccc dddd eeee", 12) == ["a\n\nbbbb cccc", "dddd eeee"]


def test_hard_cut_keeps_surrogate_pairs_and_entities_whole() -> None:
    assert split_plain("😀" * 7, 5) == ["😀😀", "😀😀", "😀😀", "😀"]
    assert split_html("<i>" + "😀" * 5 + "</i>", 3) == ["<i>😀</i>"] * 5
    assert split_html("&lt;" * 7, 3) == ["&lt;&lt;&lt;", "&lt;&lt;&lt;", "&lt;"]
    assert split_plain("x" * 9, 4) == ["xxxx", "xxxx", "x"]


def test_hard_cut_keeps_combining_marks_with_their_letter() -> None:
    assert split_plain("abce\u0301fg", 4) == ["abc", "e\u0301fg"]


def test_what_fits_stays_whole_and_blank_gives_nothing() -> None:
    assert split_html(" <b>hi</b>\n") == [" <b>hi</b>\n"]
    assert split_plain("hi") == ["hi"]
    assert split_html("<b> </b>\n\n") == []
    assert split_plain(" \n ") == []
    assert split_html("") == []


def test_limit_must_hold_an_astral_character() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_plain("abc", 1)
    with pytest.raises(ValueError, match="limit"):
        split_html("abc", 0)


# ---------------------------------------------------------------------------- properties

_FRAGMENTS = [
    "**", "__", "*", "_", "~~", "~", "`", "``", "```", "```python\n", "\n```\n", "[", "](",
    ")", "[link](https://example.com/a_b?x=1&y=2)", "[x](javascript:alert(1))",
    "[me](tg://user?id=1)", "# ", "\n## ", "\n", "\n\n", " ", "  ", ". ", "! ", "? ",
    "<", ">", "&", '"', "&amp;", "&lt;", "<b>", "</i>", "<img src=x onerror=alert(1)>",
    "snake_case_name", "word", "😀", "👨\u200d👩\u200d👧", "𝔄", "e\u0301", "中文", "\t",
]  # fmt: skip
_pieces = st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=8))
_markdown = st.lists(_pieces, max_size=120).map("".join)


@settings(max_examples=200, deadline=None)
@given(_markdown)
def test_to_html_is_always_well_formed(markdown: str) -> None:
    assert_telegram_html(to_html(markdown))


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(exclude_characters="*_~`[#\r"), max_size=200))
def test_text_without_markers_round_trips(text: str) -> None:
    assert to_plain(to_html(text)) == text


@settings(max_examples=200, deadline=None)
@given(_markdown, st.integers(20, 300))
def test_split_html_chunks_fit_and_keep_the_text(markdown: str, limit: int) -> None:
    rendered = to_html(markdown)
    chunks = split_html(rendered, limit)
    for chunk in chunks:
        assert_telegram_html(chunk)
        assert visible_length(chunk) <= limit
        assert to_plain(chunk).strip()
        to_plain(chunk).encode("utf-16-le", "strict")  # a split surrogate pair raises
    assert _squeeze("".join(map(to_plain, chunks))) == _squeeze(to_plain(rendered))


@settings(max_examples=200, deadline=None)
@given(_markdown, st.integers(20, 300))
def test_split_plain_chunks_fit_and_keep_the_text(text: str, limit: int) -> None:
    chunks = split_plain(text, limit)
    for chunk in chunks:
        assert chunk.strip()
        assert len(chunk.encode("utf-16-le", "strict")) // 2 <= limit  # strict: no split pair
    assert _squeeze("".join(chunks)) == _squeeze(text)
