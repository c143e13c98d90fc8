"""botkit.handoff_rules: asking for a human, support hours and the handoff notices."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botkit.handoff_rules import (
    EscalationMatcher,
    SupportHours,
    asks_for_human,
    closed_notice,
    handoff_notice,
    osa_distance,
)

KEYWORDS = ["agent", "human", "real person", "operator"]
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def reference_osa(a: str, b: str) -> int:
    """Textbook optimal-string-alignment distance (full matrix, no shortcuts)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


# --- asking for a human --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "AGENT please",
        "can I talk to a humna",
        "i want an agnet",
        "a real persn pls",
        "get me an operatr",
        "Human!!!",
        "speak to a REAL   person",
        "agents?",
        "is there an agent's desk",
        "any humans around",
        "real persons only",
        "real-person now",
        "real... person",
        "rael person",  # a swap of adjacent letters is one edit
        "opertaor",
        "\uff21\uff27\uff25\uff2e\uff34",  # fullwidth AGENT (NFKC)
        "«Human»",
        "I don't need a human",  # negation is not interpreted (documented)
    ],
)
def test_asks_for_human(text: str) -> None:
    assert asks_for_human(text, KEYWORDS)


@pytest.mark.parametrize(
    "text",
    [
        "my agenda",
        "reagent",
        "humanity",
        "is this a real purchase",
        "hum an",
        "person",
        "a person",
        "management",
        "",
        "   ",
        "!!!",
        "agentur",  # distance 2 from agent: too far for a 5-letter keyword
        "persona real",  # the words of a keyword must come in order
        "real nice person",  # ... and next to each other
        "oprtr",  # distance 3 from operator
        "the operation failed",  # distance 2 from operator: a real word, not a request
        "oeprtaor",  # two swaps: distance 2
    ],
)
def test_does_not_ask_for_human(text: str) -> None:
    assert not asks_for_human(text, KEYWORDS)


def test_pines_keywords_leave_common_support_words_alone() -> None:
    pine = ["agent", "human", "real person", "representative", "operator"]

    assert not asks_for_human("the operation on my card was declined", pine)
    assert not asks_for_human("is this a fair representation of the colour?", pine)
    assert asks_for_human("a representatve please", pine)


def test_short_keyword_words_match_exactly() -> None:
    matcher = EscalationMatcher(["bot", "talk to a human"])
    assert matcher.matches("are you a BOT?")
    assert matcher.matches("bots!")  # plural of the last word
    assert not matcher.matches("a bat")
    assert not matcher.matches("boot")
    assert matcher.matches("can I talk, to a... humna")
    assert not matcher.matches("talk too a human")
    assert not matcher.matches("talk to an human")


def test_one_typo_is_allowed_from_four_letters_and_none_below() -> None:
    matcher = EscalationMatcher(["help", "operator", "bot"])
    assert matcher.matches("hepl")
    assert matcher.matches("hlep me")
    assert not matcher.matches("hlpe me")  # two edits from a 4-letter word
    assert matcher.matches("opperator")  # one insertion into an 8-letter word
    assert not matcher.matches("opperattor")  # two: long words get no more
    assert not matcher.matches("bto")  # under 4 letters: exact only


def test_matcher_normalises_and_drops_empty_keywords() -> None:
    matcher = EscalationMatcher(["  Real   PERSON ", "", "!!", "real person", "Agent"])
    assert matcher.keywords == ("real person", "agent")
    assert "real person" in repr(matcher)
    assert not EscalationMatcher([]).matches("agent")
    assert not EscalationMatcher(["", "?"]).matches("anything at all")


def test_asks_for_human_accepts_any_sequence() -> None:
    assert asks_for_human("an agent", ("agent",))
    assert asks_for_human("an agent", ["agent"])
    assert not asks_for_human("an agent", [])


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("", "", 0),
        ("agent", "agent", 0),
        ("agent", "", 5),
        ("agent", "agnet", 1),
        ("agent", "agenda", 2),
        ("agent", "reagent", 2),
        ("human", "humanity", 3),
        ("ca", "abc", 3),  # OSA, not unrestricted Damerau-Levenshtein (which gives 2)
        ("operator", "operation", 2),
    ],
)
def test_osa_distance(a: str, b: str, distance: int) -> None:
    assert osa_distance(a, b) == distance
    assert osa_distance(b, a) == distance


@given(
    st.text("abcde", max_size=8),
    st.text("abcde", max_size=8),
    st.integers(min_value=0, max_value=4),
)
def test_osa_distance_with_limit_agrees_with_reference(a: str, b: str, limit: int) -> None:
    expected = reference_osa(a, b)
    assert osa_distance(a, b) == expected
    assert osa_distance(a, b, limit) == min(expected, limit + 1)


KEYWORD_WORDS = sorted({w for k in KEYWORDS for w in k.split()})
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# No apostrophe: it joins the words around it ("hu'man" is the word "human").
SEPARATORS = st.text(" \t\n.,;:!?()-\"/*", min_size=1, max_size=3)


def far_from_keywords(word: str) -> bool:
    forms = {word, word.removesuffix("s")}
    return all(reference_osa(f, k) > 2 for f in forms for k in KEYWORD_WORDS)


COMMON_WORDS = [
    w
    for w in (
        "hello can you help me with my order please the invoice is wrong where is "
        "refund shipping tracking number thanks a lot i need this today password reset "
        "account login broken page error price discount coupon delivery address change "
        "cancel subscription why does it take so long what time do you close"
    ).split()
    if far_from_keywords(w)
]
SAFE_WORDS = st.one_of(
    st.sampled_from(COMMON_WORDS),
    st.text(LETTERS, min_size=1, max_size=10).filter(far_from_keywords),
)


def random_case(text: str) -> st.SearchStrategy[str]:
    flips = st.lists(st.booleans(), min_size=len(text), max_size=len(text))
    return flips.map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))
    )


@st.composite
def safe_messages(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Words far from every keyword word, in random case, and the separators after each."""
    words = [draw(random_case(w)) for w in draw(st.lists(SAFE_WORDS, max_size=12))]
    separators = [draw(SEPARATORS) for _ in words]
    return words, separators


def join(words: list[str], separators: list[str]) -> str:
    return "".join(w + s for w, s in zip(words, separators, strict=True))


@settings(max_examples=150)
@given(safe_messages())
def test_text_without_keywords_never_matches(message: tuple[list[str], list[str]]) -> None:
    assert not asks_for_human(join(*message), KEYWORDS)


@settings(max_examples=150)
@given(safe_messages(), st.sampled_from(KEYWORDS), st.data())
def test_inserting_a_keyword_anywhere_matches(
    message: tuple[list[str], list[str]], keyword: str, data: st.DataObject
) -> None:
    words, separators = message
    at = data.draw(st.integers(min_value=0, max_value=len(words)))
    parts = [data.draw(random_case(w)) for w in keyword.split()]
    between = [data.draw(SEPARATORS) for _ in parts[1:]]
    inserted = parts[0] + "".join(s + p for s, p in zip(between, parts[1:], strict=True))
    before = data.draw(st.text("([\"'«¿ *", max_size=2))
    after = data.draw(st.text(")]\"'»!?.,:* ", max_size=3))
    text = join(words[:at], separators[:at]) + before + inserted + after
    text += " " + join(words[at:], separators[at:])
    assert asks_for_human(text, KEYWORDS), text


@st.composite
def one_typo(draw: st.DrawFn, word: str) -> str:
    i = draw(st.integers(min_value=0, max_value=len(word) - 1))
    kind = draw(st.sampled_from(["swap", "delete", "insert", "replace"]))
    letter = draw(st.sampled_from(LETTERS))
    if kind == "swap" and i < len(word) - 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "insert":
        return word[:i] + letter + word[i:]
    return word[:i] + letter + word[i + 1 :]


@given(st.data())
def test_one_typo_in_a_keyword_still_matches(data: st.DataObject) -> None:
    keyword = data.draw(st.sampled_from(KEYWORDS))
    typed = " ".join(data.draw(one_typo(w)) for w in keyword.split())
    assert asks_for_human(f"please, {typed}!", KEYWORDS), typed


# --- support hours: parsing ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "normalised", "described"),
    [
        (
            "Mon-Fri 09:00-17:00 Europe/Berlin",
            "Mon-Fri 09:00-17:00 Europe/Berlin",
            "Mon-Fri 09:00-17:00 (Europe/Berlin)",
        ),
        (
            "mon-fri 9:00-17:00,  SAT 10:00-14:00   America/New_York",
            "Mon-Fri 09:00-17:00, Sat 10:00-14:00 America/New_York",
            "Mon-Fri 09:00-17:00, Sat 10:00-14:00 (America/New_York)",
        ),
        ("daily 00:00-24:00 UTC", "daily 00:00-24:00 UTC", "daily 00:00-24:00 (UTC)"),
        ("Mon-Sun 08:00-20:00 Asia/Tokyo", "Mon-Sun 08:00-20:00 Asia/Tokyo", None),
        ("Monday - Friday 09:00 \u2013 17:00 UTC", "Mon-Fri 09:00-17:00 UTC", None),
        ("Fri 22:00-06:00 Europe/Berlin", "Fri 22:00-06:00 Europe/Berlin", None),
        (
            "Mon-Fri 09:00-12:00 13:00-17:00 Europe/Berlin",
            "Mon-Fri 09:00-12:00 13:00-17:00 Europe/Berlin",
            "Mon-Fri 09:00-12:00 13:00-17:00 (Europe/Berlin)",
        ),
        ("Fri-Mon 10:00-12:00 UTC", "Fri-Mon 10:00-12:00 UTC", None),
        (
            "tues 10:00-12:00, Thursday 10:00-12:00 UTC",
            "Tue 10:00-12:00, Thu 10:00-12:00 UTC",
            None,
        ),
    ],
)
def test_parse_valid_specs(spec: str, normalised: str, described: str | None) -> None:
    hours = SupportHours.parse(spec)
    assert str(hours) == normalised
    if described is not None:
        assert hours.describe() == described
    again = SupportHours.parse(str(hours))
    assert again == hours
    assert hash(again) == hash(hours)
    assert repr(hours) == f"SupportHours.parse({normalised!r})"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "Support hours are empty; write e.g. 'Mon-Fri 09:00-17:00 Europe/Berlin'."),
        ("UTC", "Support hours 'UTC' need days, hours and a time zone"),
        ("Mon-Fri 09:00-17:00", "must end with an IANA time zone such as Europe/Berlin"),
        (
            "Mon-Fri 09:00-17:00 Europe/Berln",
            "Unknown time zone 'Europe/Berln' at the end of support hours",
        ),
        ("Mon-Fri 09:00-17:00 Europe", "Unknown time zone 'Europe'"),
        ("Mon-Fri 09:00-17:00 ../../etc/passwd", "Unknown time zone '../../etc/passwd'"),
        ("Mnd 09:00-17:00 UTC", "Unknown day 'Mnd' in support hours 'Mnd 09:00-17:00'"),
        ("Mon-Fryday 09:00-17:00 UTC", "Unknown day 'Fryday'"),
        ("Mon-Wed-Fri 09:00-17:00 UTC", "Bad day range 'Mon-Wed-Fri'"),
        ("Mon-Mon 09:00-17:00 UTC", "Day range 'Mon-Mon' in support hours"),
        ("Mon-Fri UTC", "Support hours 'Mon-Fri' give days but no hours"),
        ("Tue, Thu 10:00-12:00 UTC", "Support hours 'Tue' give days but no hours"),
        ("Mon-Fri 9-5 UTC", "Bad time range '9-5' in support hours 'Mon-Fri 9-5'"),
        ("Mon-Fri 09:00-25:00 UTC", "Bad time '25:00' in support hours 'Mon-Fri 09:00-25:00'"),
        ("Mon-Fri 09:60-17:00 UTC", "Bad time '09:60'"),
        ("Mon 24:00-02:00 UTC", "Bad time '24:00'"),
        ("Mon 09:00-09:00 UTC", "Time range '09:00-09:00' in support hours 'Mon 09:00-09:00'"),
        ("Mon-Fri 09:00-17:00,, Sat 10:00-14:00 UTC", "have an empty part between commas"),
        (
            "Mon-Fri 09:00-17:00 Sat 10:00-14:00 UTC",
            "run two groups together; separate them with a comma",
        ),
    ],
)
def test_parse_invalid_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        SupportHours.parse(spec)
    assert str(caught.value).endswith(".")


def test_equality() -> None:
    hours = SupportHours.parse("Mon-Fri 09:00-17:00 UTC")
    assert hours == SupportHours.parse("mon-fri  9:00-17:00 UTC")
    assert hours != SupportHours.parse("Mon-Fri 09:00-17:00 Europe/Berlin")
    assert hours != "Mon-Fri 09:00-17:00 UTC"
    assert hours.zone == ZoneInfo("UTC")


# --- support hours: is_open ----------------------------------------------------------------

OFFICE = SupportHours.parse("Mon-Fri 09:00-17:00 Europe/Berlin")


def berlin(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 3) -> datetime:
    """A Berlin wall-clock time in 2025 (in March, the 24th is a Monday)."""
    return datetime(2025, month, day, hour, minute, second, tzinfo=BERLIN)


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (berlin(24, 8, 59, 59), False),
        (berlin(24, 9), True),
        (berlin(24, 16, 59, 59), True),
        (berlin(24, 17), False),
        (berlin(28, 12), True),  # Friday
        (berlin(29, 12), False),  # Saturday
        (berlin(30, 12), False),  # Sunday
        (datetime(2025, 3, 24, 8, 0, tzinfo=UTC), True),  # 09:00 in Berlin
        (datetime(2025, 3, 31, 7, 0, tzinfo=UTC), True),  # 09:00 CEST, after the change
        (datetime(2025, 3, 31, 6, 59, tzinfo=UTC), False),
        # New York is already on summer time (since 9 March), Berlin not yet.
        (datetime(2025, 3, 24, 4, 0, tzinfo=NEW_YORK), True),  # 08:00 UTC, 09:00 Berlin
        (datetime(2025, 3, 24, 3, 59, tzinfo=NEW_YORK), False),
    ],
)
def test_is_open_at_boundaries(at: datetime, is_open: bool) -> None:
    assert OFFICE.is_open(at) is is_open


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware datetime"):
        OFFICE.is_open(datetime(2025, 3, 24, 9))
    with pytest.raises(ValueError, match="aware datetime"):
        OFFICE.next_opening(datetime(2025, 3, 24, 9))


def test_overnight_span_belongs_to_the_day_it_starts_on() -> None:
    hours = SupportHours.parse("Fri 22:00-06:00 Europe/Berlin")
    assert not hours.is_open(berlin(28, 21, 59))
    assert hours.is_open(berlin(28, 22))
    assert hours.is_open(berlin(29, 5, 59, 59))
    assert not hours.is_open(berlin(29, 6))
    assert not hours.is_open(berlin(27, 23))  # Thursday night
    assert not hours.is_open(berlin(29, 23))  # Saturday night
    assert not hours.is_open(berlin(28, 3))  # Friday early morning: Thursday's night


def test_overnight_span_wraps_past_sunday() -> None:
    hours = SupportHours.parse("Sun 22:00-06:00 UTC")
    assert hours.is_open(datetime(2025, 3, 30, 23, tzinfo=UTC))
    assert hours.is_open(datetime(2025, 3, 31, 3, tzinfo=UTC))  # Monday
    assert not hours.is_open(datetime(2025, 3, 31, 6, tzinfo=UTC))
    assert not hours.is_open(datetime(2025, 3, 24, 22, tzinfo=UTC))


def test_closing_at_midnight() -> None:
    hours = SupportHours.parse("Mon 20:00-24:00 UTC")
    assert hours.is_open(datetime(2025, 3, 24, 23, 59, 59, 999999, tzinfo=UTC))
    assert not hours.is_open(datetime(2025, 3, 25, 0, 0, tzinfo=UTC))
    same = SupportHours.parse("Mon 20:00-00:00 UTC")  # closing at 00:00 runs to midnight
    assert same.is_open(datetime(2025, 3, 24, 23, 59, tzinfo=UTC))
    assert not same.is_open(datetime(2025, 3, 25, 0, 0, tzinfo=UTC))
    always = SupportHours.parse("daily 00:00-24:00 UTC")
    moment = datetime(2025, 3, 30, 0, 0, tzinfo=UTC)
    assert all(always.is_open(moment + timedelta(minutes=37 * n)) for n in range(300))


# --- support hours: next_opening -----------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "opening"),
    [
        (berlin(21, 18), berlin(24, 9)),  # Friday evening -> Monday
        (berlin(22, 12), berlin(24, 9)),  # Saturday
        (berlin(24, 7), berlin(24, 9)),  # Monday early
        (berlin(26, 17), berlin(27, 9)),  # Wednesday closing time -> Thursday
        (berlin(28, 18), berlin(31, 9)),  # across the change to summer time
        (berlin(25, 10, 30), berlin(25, 10, 30)),  # open: now
    ],
)
def test_next_opening(at: datetime, opening: datetime) -> None:
    found = OFFICE.next_opening(at)
    assert found == opening
    assert found is not None
    assert found.tzinfo is BERLIN


def test_next_opening_across_dst_keeps_wall_clock_time() -> None:
    found = OFFICE.next_opening(berlin(28, 18))
    assert found is not None
    assert (found.hour, found.minute) == (9, 0)
    assert found.utcoffset() == timedelta(hours=2)
    assert found.astimezone(UTC) == datetime(2025, 3, 31, 7, 0, tzinfo=UTC)
    before = OFFICE.next_opening(berlin(21, 18))
    assert before is not None
    assert before.astimezone(UTC) == datetime(2025, 3, 24, 8, 0, tzinfo=UTC)


def test_next_opening_returns_the_spec_zone() -> None:
    hours = SupportHours.parse("Mon-Fri 09:00-17:00, Sat 10:00-14:00 America/New_York")
    found = hours.next_opening(datetime(2025, 3, 29, 12, 0, tzinfo=UTC))  # Sat 08:00 EDT
    assert found == datetime(2025, 3, 29, 10, 0, tzinfo=NEW_YORK)
    assert found is not None
    assert found.tzinfo is NEW_YORK


def test_opening_inside_the_skipped_hour_is_when_clocks_jump() -> None:
    # On 30 March 2025 Berlin's clocks go from 02:00 CET straight to 03:00 CEST.
    hours = SupportHours.parse("Sun 02:30-04:00 Europe/Berlin")
    jump = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert not hours.is_open(jump - timedelta(microseconds=1))
    assert hours.is_open(jump)
    assert hours.next_opening(berlin(30, 0)) == jump
    # A span wholly inside the skipped hour never opens that day: the next is a week on.
    skipped = SupportHours.parse("Sun 02:10-02:40 Europe/Berlin")
    assert skipped.next_opening(berlin(30, 0)) == datetime(
        2025, 4, 6, 2, 10, tzinfo=BERLIN
    )


def utc(moment: datetime | None) -> datetime | None:
    """``moment`` in UTC. Python never finds a datetime at a repeated (ambiguous) local time
    equal to one in another zone, so tests compare openings in UTC."""
    return None if moment is None else moment.astimezone(UTC)


def test_repeated_hour_when_clocks_go_back() -> None:
    # On 26 October 2025 Berlin's clocks go from 03:00 CEST back to 02:00 CET.
    hours = SupportHours.parse("Sun 02:30-02:45 Europe/Berlin")
    first = hours.next_opening(datetime(2025, 10, 26, 0, 0, tzinfo=UTC))
    assert utc(first) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = hours.next_opening(datetime(2025, 10, 26, 0, 50, tzinfo=UTC))
    assert utc(second) == datetime(2025, 10, 26, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert second is not None
    assert second.fold == 1
    assert second.utcoffset() == timedelta(hours=1)
    # Closed at 02:15 CEST, open again when the clock falls back to 02:00 CET.
    back = SupportHours.parse("Sun 01:00-02:15 Europe/Berlin")
    reopening = back.next_opening(datetime(2025, 10, 26, 0, 20, tzinfo=UTC))
    assert utc(reopening) == datetime(2025, 10, 26, 1, 0, tzinfo=UTC)


def test_week_around_the_change_to_summer_time() -> None:
    """Every 5 minutes from Monday 24 to Tuesday 1 April 2025 in Berlin, is_open follows
    the local wall clock and next_opening is the first open moment."""
    hours = SupportHours.parse("Mon-Fri 09:00-17:00, Sat 22:00-03:00 Europe/Berlin")
    start = datetime(2025, 3, 23, 23, 0, tzinfo=UTC)  # Monday 00:00 CET
    moments = [start + timedelta(minutes=5 * n) for n in range(8 * 24 * 12)]
    states = [hours.is_open(m) for m in moments]
    for moment, state in zip(moments, states, strict=True):
        local = moment.astimezone(BERLIN)
        minutes = local.hour * 60 + local.minute
        weekday_office = local.weekday() < 5 and 9 * 60 <= minutes < 17 * 60
        night = (local.weekday() == 5 and minutes >= 22 * 60) or (
            local.weekday() == 6 and minutes < 3 * 60
        )
        assert state is (weekday_office or night), local
    first_open_after = None
    for i in range(len(moments) - 1, -1, -1):
        if states[i]:
            first_open_after = moments[i]
        opening = utc(hours.next_opening(moments[i]))
        if first_open_after is None:
            continue
        if states[i]:
            assert opening == moments[i]
        else:
            # Openings fall on 5-minute marks here, so the scan finds them exactly.
            assert opening == first_open_after, moments[i]
    # Saturday's night runs into the skipped hour and closes at 03:00 CEST: 4 hours.
    night_start = datetime(2025, 3, 29, 21, 0, tzinfo=UTC)
    assert hours.is_open(night_start)
    assert hours.is_open(datetime(2025, 3, 30, 0, 59, tzinfo=UTC))
    assert not hours.is_open(datetime(2025, 3, 30, 1, 0, tzinfo=UTC))


SPECS = [
    "Mon-Fri 09:00-17:00 Europe/Berlin",
    "Mon-Fri 09:00-17:00, Sat 10:00-14:00 America/New_York",
    "Sun 02:30-04:00, Wed 22:00-02:30 Europe/Berlin",
    "daily 01:00-02:30 America/Sao_Paulo",
    "Fri-Mon 23:00-00:30 Australia/Lord_Howe",
    "Tue 00:00-24:00 Pacific/Apia",
]


@settings(max_examples=150)
@given(
    st.sampled_from(SPECS),
    st.datetimes(
        min_value=datetime(2010, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
    st.lists(st.floats(min_value=0, max_value=1), max_size=5),
)
def test_next_opening_is_the_first_open_moment(
    spec: str, at: datetime, fractions: list[float]
) -> None:
    hours = SupportHours.parse(spec)
    opening = hours.next_opening(at)
    assert opening is not None
    assert opening.tzinfo is hours.zone
    assert opening >= at
    assert hours.is_open(opening)
    if hours.is_open(at):
        assert utc(opening) == at
        return
    # Arithmetic on a datetime in a zone is wall-clock arithmetic: do it in UTC.
    just_before = opening.astimezone(UTC) - timedelta(microseconds=1)
    if just_before >= at:
        assert not hours.is_open(just_before)
    for fraction in fractions:
        assert not hours.is_open(at + (just_before - at) * fraction)


# --- notices -------------------------------------------------------------------------------

AVAILABLE = (
    "Pine here: I'm passing you to a person from our team. Someone will reply here shortly; "
    "you don't need to stay on this page."
)


def test_handoff_notice_when_people_are_available() -> None:
    assert handoff_notice("Pine", None, berlin(29, 3)) == AVAILABLE
    assert handoff_notice("Pine", OFFICE, berlin(24, 9)) == AVAILABLE
    assert handoff_notice("  ", None, berlin(24, 9)) == (
        "I'm passing you to a person from our team. Someone will reply here shortly; "
        "you don't need to stay on this page."
    )


def test_handoff_notice_outside_hours_is_the_closed_notice() -> None:
    at = berlin(28, 18)
    assert handoff_notice("Pine", OFFICE, at) == closed_notice(OFFICE, at)


@pytest.mark.parametrize(
    ("at", "when"),
    [
        (berlin(28, 18), "Monday at 09:00"),  # Friday evening, across the DST change
        (berlin(29, 10), "Monday at 09:00"),  # Saturday
        (berlin(30, 23, 59), "tomorrow at 09:00"),  # Sunday night
        (berlin(31, 7, 30), "today at 09:00"),
        (berlin(31, 17), "tomorrow at 09:00"),
        (datetime(2025, 3, 31, 6, 30, tzinfo=UTC), "today at 09:00"),  # 08:30 CEST
    ],
)
def test_closed_notice(at: datetime, when: str) -> None:
    assert closed_notice(OFFICE, at) == (
        "Our team is available Mon-Fri 09:00-17:00 (Europe/Berlin); the next opening is "
        f"{when}. Until then I'll keep helping as best I can."
    )


def test_closed_notice_uses_the_spec_zone_for_today_and_tomorrow() -> None:
    hours = SupportHours.parse("Mon-Fri 09:00-17:00 Asia/Tokyo")
    at = datetime(2025, 3, 30, 20, 0, tzinfo=UTC)  # Sunday in UTC, Monday 05:00 in Tokyo
    assert "the next opening is today at 09:00." in closed_notice(hours, at)


def test_closed_notice_a_week_ahead_names_the_date() -> None:
    hours = SupportHours.parse("Mon 09:00-10:00, Sat 10:00-14:00 UTC")
    at = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)  # Monday, just closed
    assert "the next opening is Saturday at 10:00." in closed_notice(hours, at)
    weekly = SupportHours.parse("Mon 09:00-10:00 UTC")
    assert closed_notice(weekly, at) == (
        "Our team is available Mon 09:00-10:00 (UTC); the next opening is "
        "Monday 10 March at 09:00. Until then I'll keep helping as best I can."
    )


def test_closed_notice_without_any_opening() -> None:
    never = SupportHours((), ZoneInfo("UTC"))  # parse() always gives at least one range
    at = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
    assert never.next_opening(at) is None
    assert closed_notice(never, at).endswith(
        "but no opening is coming up soon. Meanwhile I'll keep helping as best I can."
    )
