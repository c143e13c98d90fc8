"""Rules for human handoff: when a user asks for a person, and when people are there.

Everything here is pure (no I/O, no clock reads: callers pass the time in) and uses the
standard library only.

Asking for a human
------------------
:class:`EscalationMatcher` (and the cached wrapper :func:`asks_for_human`) decides whether
a message asks for a human, given a persona's ``escalation_keywords``:

* Text and keywords are normalised the same way: NFKC, case folding, NFKC again. Words
  are runs of letters, digits and combining marks; everything else (punctuation,
  whitespace, symbols, ``_``) separates words and is otherwise ignored. An apostrophe
  inside a word is dropped (``don't`` -> ``dont``), and a possessive ``'s`` is removed
  (``agent's`` -> ``agent``).
* Keywords match whole words only: ``agent`` matches ``Agent!`` and ``agents`` but not
  ``agenda``, ``reagent`` or ``management``.
* The last word of a keyword may carry a plural ``s`` (``agents``, ``real persons``).
* Typos: a word matches a keyword word when their Damerau-Levenshtein distance (the
  optimal string alignment variant, :func:`osa_distance`) is at most 1 for keyword words
  of 4 characters or more (one letter wrong, missing, extra, or two swapped); shorter
  keyword words must match exactly. Two typos were allowed for long words at first, but
  that took real words for requests (``operation`` for ``operator``, ``representation``
  for ``representative``): a wrong handoff in the middle of a support question is worse
  than asking the user to retype "agent".
* A keyword of several words (``real person``) matches consecutive words of the message,
  each fuzzily, whatever whitespace or punctuation lies between them. One of its words
  alone (``person``) does not match.

Known limitations, chosen for simplicity and predictability:

* Negation is not interpreted: ``I don't need a human`` matches. Asking for a person
  one does not want is rare, and a wrong handoff costs less than a missed one.
* One typo still lets a few real words through for some keywords (``agents`` is fine,
  but a keyword ``person`` would match ``persons`` and ``parson``); pick keywords that
  are not one letter away from common words.
* Words split or joined differently do not match: ``hu man``, ``humanagent``.
* The plural rule is English-only (a trailing ``s``); there is no stemming otherwise
  (``people`` does not match ``person``).
* Keywords with no letters or digits (``""``, ``"!!"``) are ignored.

Support hours
-------------
:class:`SupportHours` parses specs such as ``Mon-Fri 09:00-17:00 Europe/Berlin`` or
``Mon-Fri 09:00-17:00, Sat 10:00-14:00 America/New_York``; see :meth:`SupportHours.parse`.
Hours are wall-clock times in the spec's zone, so an opening at 09:00 stays at 09:00 local
time across daylight-saving changes.

Notices
-------
:func:`handoff_notice` and :func:`closed_notice` build the texts shown to the user.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "EscalationMatcher",
    "SupportHours",
    "asks_for_human",
    "closed_notice",
    "handoff_notice",
    "osa_distance",
]


# --- asking for a human --------------------------------------------------------------------

_WORD_CACHE_SIZE = 10_000
"""Per matcher: how many distinct words' matches to remember before starting afresh."""
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})


def osa_distance(a: str, b: str, limit: int | None = None) -> int:
    """The optimal-string-alignment (restricted Damerau-Levenshtein) distance of two strings.

    Insertions, deletions, substitutions and swaps of two adjacent characters cost 1 each
    (a swapped pair is not edited further). With ``limit``, the result is capped at
    ``limit + 1`` and computing stops as soon as the distance is known to exceed it.
    """
    if a == b:
        return 0
    cap = None if limit is None else limit + 1
    if cap is not None and abs(len(a) - len(b)) >= cap:
        return cap
    if not a or not b:
        return max(len(a), len(b))
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = 0 if ca == cb else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                value = min(value, before[j - 2] + 1)
            current[j] = value
        # No later row can hold a value below this row's minimum, so stop early.
        if cap is not None and min(current) >= cap:
            return cap
        before, previous = previous, current
    distance = previous[-1]
    return distance if cap is None else min(distance, cap)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _words(text: str) -> list[str]:
    """The words of ``text``, normalised (see the module docstring)."""
    words: list[str] = []
    current: list[str] = []

    def flush() -> None:
        word = "".join(current).rstrip("'")
        if word.endswith("'s"):
            word = word[:-2]
        word = word.replace("'", "")
        if word:
            words.append(word)
        current.clear()

    for char in _normalise(text).translate(_APOSTROPHES):
        if char.isalnum() or (
            current and (char == "'" or unicodedata.category(char).startswith("M"))
        ):
            current.append(char)
        elif current:
            flush()
    if current:
        flush()
    return words


def _allowed_typos(keyword_word: str) -> int:
    if len(keyword_word) >= 4:
        return 1
    return 0


@dataclass(frozen=True)
class _KeywordWord:
    text: str
    typos: int
    plural: bool
    """Whether a trailing ``s`` may follow (the last word of a keyword)."""

    def matches(self, word: str) -> bool:
        if self._close(word):
            return True
        return self.plural and word.endswith("s") and self._close(word[:-1])

    def _close(self, word: str) -> bool:
        if self.typos == 0:
            return word == self.text
        if abs(len(word) - len(self.text)) > self.typos:
            return False
        # Each edit removes at most one character the other word lacks: a cheap lower bound.
        if len(set(word).difference(self.text)) > self.typos:
            return False
        return osa_distance(word, self.text, self.typos) <= self.typos


class EscalationMatcher:
    """Decides whether a message asks for a human, for one list of keywords.

    Build one per keyword list and reuse it: the keywords are normalised once.
    """

    def __init__(self, keywords: Iterable[str]) -> None:
        phrases: list[tuple[_KeywordWord, ...]] = []
        seen: set[tuple[str, ...]] = set()
        for keyword in keywords:
            words = tuple(_words(keyword))
            if not words or words in seen:
                continue
            seen.add(words)
            last = len(words) - 1
            phrases.append(
                tuple(_KeywordWord(w, _allowed_typos(w), i == last) for i, w in enumerate(words))
            )
        self._phrases = tuple(phrases)
        self._keyword_words = tuple({w for phrase in phrases for w in phrase})
        self._by_first_word: dict[_KeywordWord, list[tuple[_KeywordWord, ...]]] = {
            w: [p for p in phrases if p[0] == w] for w in self._keyword_words
        }
        self._hits: dict[str, frozenset[_KeywordWord]] = {}
        """Which keyword words a message word matches, for words seen before (bounded)."""

    @property
    def keywords(self) -> tuple[str, ...]:
        """The normalised keywords, words joined by one space (empty ones dropped)."""
        return tuple(" ".join(w.text for w in phrase) for phrase in self._phrases)

    def matches(self, text: str) -> bool:
        """True when ``text`` contains one of the keywords (see the module docstring)."""
        if not self._phrases:
            return False
        words = _words(text)
        if not words:
            return False
        cache = self._hits
        found: list[frozenset[_KeywordWord]] = []
        for word in words:
            hits = cache.get(word)
            if hits is None:
                hits = frozenset(k for k in self._keyword_words if k.matches(word))
                if len(cache) >= _WORD_CACHE_SIZE:
                    cache.clear()
                cache[word] = hits
            found.append(hits)
        for start, first_hits in enumerate(found):
            for first in first_hits:
                for phrase in self._by_first_word[first]:
                    end = start + len(phrase)
                    if end <= len(found) and all(
                        k in found[start + n] for n, k in enumerate(phrase[1:], 1)
                    ):
                        return True
        return False

    def __repr__(self) -> str:
        return f"EscalationMatcher({list(self.keywords)!r})"


@lru_cache(maxsize=64)
def _matcher(keywords: tuple[str, ...]) -> EscalationMatcher:
    return EscalationMatcher(keywords)


def asks_for_human(text: str, keywords: Sequence[str]) -> bool:
    """True when ``text`` asks for a human by one of ``keywords`` (in any case, with typos).

    A thin wrapper over :class:`EscalationMatcher` that caches a matcher per keyword list.
    """
    return _matcher(tuple(keywords)).matches(text)


# --- support hours -------------------------------------------------------------------------

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_DAY_NAMES = (
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday",
)
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
_DAYS_BY_NAME = {
    **{name.lower(): i for i, name in enumerate(_DAY_NAMES)},
    **{name.lower(): i for i, name in enumerate(_FULL_DAY_NAMES)},
    "tues": 1, "weds": 2, "thur": 3, "thurs": 3,
}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_TIME_RANGE = re.compile(r"(\d{1,2}:\d{2})-(\d{1,2}:\d{2})")
_DASHES = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2212": "-"})
_DAY_MINUTES = 24 * 60
_WEEK_MINUTES = 7 * _DAY_MINUTES
_EXAMPLE = "'Mon-Fri 09:00-17:00 Europe/Berlin'"
_DAYS_HELP = "use Mon, Tue, Wed, Thu, Fri, Sat or Sun, a range such as Mon-Fri, or daily"
_SEARCH_DAYS = 15
"""next_opening looks this many local days ahead (a week, plus room for skipped days)."""


@dataclass(frozen=True)
class _Group:
    """One comma-separated part of a spec: some days, and opening hours on each of them."""

    days: tuple[int, ...]
    days_text: str
    ranges: tuple[tuple[int, int], ...]
    """(opens, closes) in minutes after midnight; closes may be 1440 or, overnight,
    less than opens."""

    def __str__(self) -> str:
        return " ".join([self.days_text, *(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in self.ranges)])


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_day(name: str, group: str) -> int:
    day = _DAYS_BY_NAME.get(name.lower())
    if day is None:
        raise ValueError(f"Unknown day {name!r} in support hours {group!r}; {_DAYS_HELP}.")
    return day


def _parse_days(token: str, group: str) -> tuple[tuple[int, ...], str]:
    if token.lower() == "daily":
        return tuple(range(7)), "daily"
    if "-" in token:
        first_name, _, last_name = token.partition("-")
        if not first_name or not last_name or "-" in last_name:
            raise ValueError(
                f"Bad day range {token!r} in support hours {group!r}; {_DAYS_HELP}."
            )
        first = _parse_day(first_name, group)
        last = _parse_day(last_name, group)
        if first == last:
            raise ValueError(
                f"Day range {token!r} in support hours {group!r} starts and ends on the "
                f"same day; write just {_DAY_NAMES[first]}."
            )
        # A range may wrap past Sunday: Fri-Mon is Friday, Saturday, Sunday and Monday.
        days = tuple((first + n) % 7 for n in range((last - first) % 7 + 1))
        return days, f"{_DAY_NAMES[first]}-{_DAY_NAMES[last]}"
    day = _parse_day(token, group)
    return (day,), _DAY_NAMES[day]


def _parse_time(text: str, group: str, closing: bool) -> int:
    match = _TIME.fullmatch(text)
    hours, minutes = (int(match[1]), int(match[2])) if match else (-1, -1)
    if closing and (hours, minutes) == (24, 0):
        return _DAY_MINUTES
    if not 0 <= hours <= 23 or not 0 <= minutes <= 59:
        raise ValueError(
            f"Bad time {text!r} in support hours {group!r}; times are HH:MM from 00:00 to 23:59 "
            "(24:00 is allowed as a closing time)."
        )
    return hours * 60 + minutes


def _parse_group(group: str, spec: str) -> _Group:
    tokens = group.split()
    if not tokens:
        raise ValueError(f"Support hours {spec!r} have an empty part between commas.")
    days, days_text = _parse_days(tokens[0], group)
    if len(tokens) == 1:
        raise ValueError(
            f"Support hours {group!r} give days but no hours; write e.g. "
            f"'{days_text} 09:00-17:00'."
        )
    ranges: list[tuple[int, int]] = []
    for token in tokens[1:]:
        match = _TIME_RANGE.fullmatch(token)
        if not match:
            if ranges and _looks_like_days(token):
                raise ValueError(
                    f"Support hours {group!r} run two groups together; separate them with "
                    "a comma, e.g. 'Mon-Fri 09:00-17:00, Sat 10:00-14:00'."
                )
            raise ValueError(
                f"Bad time range {token!r} in support hours {group!r}; "
                "write it as HH:MM-HH:MM, e.g. 09:00-17:00."
            )
        opens = _parse_time(match[1], group, closing=False)
        closes = _parse_time(match[2], group, closing=True)
        if opens == closes:
            raise ValueError(
                f"Time range {token!r} in support hours {group!r} opens and closes at "
                "the same time; use 00:00-24:00 for a whole day."
            )
        ranges.append((opens, closes))
    return _Group(days, days_text, tuple(ranges))


def _looks_like_days(token: str) -> bool:
    return token.lower() == "daily" or all(
        part.lower() in _DAYS_BY_NAME for part in token.split("-", 1)
    )


def _zone_error(zone: str, spec: str) -> ValueError:
    if _TIME_RANGE.fullmatch(zone) or _TIME.fullmatch(zone):
        return ValueError(
            f"Support hours {spec!r} must end with an IANA time zone such as "
            f"Europe/Berlin, e.g. {_EXAMPLE}."
        )
    return ValueError(
        f"Unknown time zone {zone!r} at the end of support hours {spec!r}; "
        "use an IANA name such as Europe/Berlin or America/New_York."
    )


class SupportHours:
    """When people are available for handoff, as a weekly schedule in one time zone.

    Build one with :meth:`parse` (the constructor takes parsed parts and is internal).
    Instances compare equal when their normalised specs (``str(hours)``) are equal.
    """

    __slots__ = ("_groups", "_spans", "_starts", "_zone")

    def __init__(self, groups: Sequence[_Group], zone: ZoneInfo) -> None:
        self._groups = tuple(groups)
        self._zone = zone
        spans: list[tuple[int, int]] = []
        for group in self._groups:
            for day in group.days:
                for opens, closes in group.ranges:
                    start = day * _DAY_MINUTES + opens
                    length = (closes - opens) % _DAY_MINUTES or _DAY_MINUTES
                    spans.append((start, start + length))
        self._spans = tuple(sorted(spans))
        """(start, end) in minutes after Monday 00:00 local time; end may pass Sunday."""
        self._starts = tuple(
            tuple(sorted({s % _DAY_MINUTES for s, _ in self._spans if s // _DAY_MINUTES == d}))
            for d in range(7)
        )
        """The opening times (minutes after midnight) on each weekday, Monday first."""

    @classmethod
    def parse(cls, spec: str) -> SupportHours:
        """Parse a spec such as ``Mon-Fri 09:00-17:00, Sat 10:00-14:00 America/New_York``.

        A spec is one or more comma-separated groups followed by an IANA time zone. A group
        is days followed by one or more ``HH:MM-HH:MM`` ranges (``Mon-Fri 09:00-12:00
        13:00-17:00``). Days are ``Mon``...``Sun`` (full names too, any case), a range such
        as ``Mon-Fri`` (it may wrap: ``Fri-Mon``), or ``daily``. A range may close at 24:00;
        one that closes before it opens (``22:00-06:00``) runs overnight and belongs to the
        day it opens on. Raises :class:`ValueError` with a sentence naming the bad part.
        """
        # Normalise whitespace and dashes: "Mon – Fri  9:00 - 17:00" is Mon-Fri 9:00-17:00.
        text = re.sub(r"\s*-\s*", "-", " ".join(spec.translate(_DASHES).split()))
        if not text:
            raise ValueError(f"Support hours are empty; write e.g. {_EXAMPLE}.")
        body, _, zone_key = text.rpartition(" ")
        if not body:
            raise ValueError(
                f"Support hours {text!r} need days, hours and a time zone, e.g. {_EXAMPLE}."
            )
        try:
            zone = ZoneInfo(zone_key)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise _zone_error(zone_key, text) from None
        groups = [_parse_group(part.strip(), text) for part in body.split(",")]
        return cls(groups, zone)

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the hours are given in."""
        return self._zone

    def describe(self) -> str:
        """The schedule for people, e.g. ``Mon-Fri 09:00-17:00 (Europe/Berlin)``."""
        return f"{', '.join(str(g) for g in self._groups)} ({self._zone.key})"

    def __str__(self) -> str:
        return f"{', '.join(str(g) for g in self._groups)} {self._zone.key}"

    def __repr__(self) -> str:
        return f"SupportHours.parse({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SupportHours):
            return NotImplemented
        return str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def _open_at_local(self, local: datetime) -> bool:
        minute = local.weekday() * _DAY_MINUTES + local.hour * 60 + local.minute
        return any(
            start <= m < end
            for m in (minute, minute + _WEEK_MINUTES)
            for start, end in self._spans
        )

    def is_open(self, at: datetime) -> bool:
        """Whether people are available at ``at`` (an aware datetime, any zone).

        Opening times are included and closing times excluded: with 09:00-17:00, 09:00 is
        open and 17:00 closed. Raises :class:`ValueError` for a naive datetime.
        """
        return self._open_at_local(self._to_local(at))

    def next_opening(self, at: datetime) -> datetime | None:
        """The earliest moment at or after ``at`` when people are available, in the spec's
        zone: ``at`` itself when open then, else the next opening. None if there is none
        in the coming two weeks (only for a schedule whose every opening falls into skipped
        local time). Raises :class:`ValueError` for a naive datetime.

        An opening inside a skipped hour (clocks going forward) is the moment the clocks
        jump; when clocks go back, a repeated opening time opens again the second time.
        Compare or do arithmetic on the result in UTC (``.astimezone(UTC)``): Python adds
        and subtracts wall-clock time within a zone, and never finds a repeated local time
        equal to a datetime in another zone.
        """
        local = self._to_local(at)
        if self._open_at_local(local):
            return local
        start = local.astimezone(UTC)
        candidates = self._transitions(start, start + timedelta(days=_SEARCH_DAYS + 1))
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            for opens in self._starts[day.weekday()]:
                wall = datetime.combine(day, time(opens // 60, opens % 60))
                candidates.extend(self._instants(wall))
        for candidate in sorted(c for c in candidates if c >= start):
            moment = candidate.astimezone(self._zone)
            if self._open_at_local(moment):
                return moment
        return None

    def _to_local(self, at: datetime) -> datetime:
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(
                f"SupportHours needs an aware datetime (with a time zone), got {at!r}."
            )
        return at.astimezone(self._zone)

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which the local clock shows ``wall``: none (skipped by a
        change to daylight-saving time), one, or two (repeated when clocks go back)."""
        found = []
        for fold in (0, 1):
            instant = wall.replace(tzinfo=self._zone, fold=fold).astimezone(UTC)
            if instant.astimezone(self._zone).replace(tzinfo=None) == wall:
                found.append(instant)
        return sorted(set(found))

    def _transitions(self, start: datetime, end: datetime) -> list[datetime]:
        """The UTC instants in [start, end) at which the zone's UTC offset changes, to the
        second (the local clock jumps there, possibly into an opening)."""
        found: list[datetime] = []
        step = 6 * 3600  # far shorter than the time between two changes anywhere
        low, stop = int(start.timestamp()), int(end.timestamp())
        while low < stop:
            high = low + step
            if self._offset(low) != self._offset(high):
                lo, hi = low, high  # the offset changes in (lo, hi]: bisect to the second
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._offset(mid) == self._offset(lo):
                        lo = mid
                    else:
                        hi = mid
                found.append(datetime.fromtimestamp(hi, UTC))
            low = high
        return found

    def _offset(self, timestamp: int) -> timedelta | None:
        return datetime.fromtimestamp(timestamp, self._zone).utcoffset()


# --- notices -------------------------------------------------------------------------------


def _when(opening: datetime, now: datetime) -> str:
    days = (opening.date() - now.date()).days
    clock = f"{opening.hour:02d}:{opening.minute:02d}"
    if days == 0:
        return f"today at {clock}"
    if days == 1:
        return f"tomorrow at {clock}"
    weekday = _FULL_DAY_NAMES[opening.weekday()]
    if days < 7:
        return f"{weekday} at {clock}"
    return f"{weekday} {_date_text(opening.date())} at {clock}"


def _date_text(day: date) -> str:
    return f"{day.day} {_MONTH_NAMES[day.month - 1]}"


def closed_notice(hours: SupportHours, at: datetime) -> str:
    """What the user reads when they ask for a person outside support hours.

    For example: "Our team is available Mon-Fri 09:00-17:00 (Europe/Berlin); the next
    opening is Monday at 09:00. Until then I'll keep helping as best I can." The day is
    "today", "tomorrow", a weekday name, or (a week or more ahead) a weekday and date,
    all in the spec's zone as seen at ``at``.
    """
    opening = hours.next_opening(at)
    if opening is None:
        return (
            f"Our team is available {hours.describe()}, but no opening is coming up soon. "
            "Meanwhile I'll keep helping as best I can."
        )
    now = at.astimezone(hours.zone)
    return (
        f"Our team is available {hours.describe()}; the next opening is "
        f"{_when(opening, now)}. Until then I'll keep helping as best I can."
    )


def handoff_notice(display_name: str, hours: SupportHours | None, at: datetime) -> str:
    """What the user reads when their chat is handed to a person.

    With no support hours, or while they are open, the persona steps back and says a
    person will reply; outside support hours this is :func:`closed_notice`.
    """
    if hours is not None and not hours.is_open(at):
        return closed_notice(hours, at)
    name = display_name.strip()
    lead = f"{name} here: I'm" if name else "I'm"
    return (
        f"{lead} passing you to a person from our team. Someone will reply here shortly; "
        "you don't need to stay on this page."
    )
