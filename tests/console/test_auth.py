"""Passwords and session cookies of the console, without a server."""

from __future__ import annotations

import base64
import hashlib

import pytest

from botkit.console.auth import (
    MIN_PASSWORD_CHARS,
    CookieSigner,
    FailureLimiter,
    PasswordError,
    check_new_password,
    hash_password,
    verify_password,
)

SECRET = b"s" * 32


def test_a_hash_has_the_documented_format_and_scrypts_parameters() -> None:
    stored = hash_password("correct horse battery")

    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    salt_bytes = base64.b64decode(salt, validate=True)
    assert len(salt_bytes) == 16
    expected = hashlib.scrypt(b"correct horse battery", salt=salt_bytes, n=2**14, r=8, p=1,
                              dklen=len(base64.b64decode(digest)))
    assert base64.b64decode(digest) == expected


def test_the_right_password_verifies_and_a_wrong_one_does_not() -> None:
    stored = hash_password("correct horse battery")

    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)


def test_two_hashes_of_one_password_differ() -> None:
    first, second = hash_password("same password!"), hash_password("same password!")

    assert first != second
    assert first.split("$")[4] != second.split("$")[4]  # the salts
    assert verify_password("same password!", first)
    assert verify_password("same password!", second)


@pytest.mark.parametrize("stored", [
    "", "plain-text-password", "scrypt$16384$8$1$abc", "bcrypt$16384$8$1$AAAA$BBBB",
    "scrypt$16384$8$1$!!!$AAAA", "scrypt$1000$8$1$c2FsdHNhbHQ=$" + "A" * 44,
    "scrypt$9999999999$8$1$c2FsdHNhbHQ=$" + "A" * 44,
])
def test_a_malformed_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything at all", stored)


def test_passwords_under_ten_characters_are_refused() -> None:
    with pytest.raises(PasswordError, match="at least 10 characters"):
        check_new_password("x" * (MIN_PASSWORD_CHARS - 1))
    assert check_new_password("x" * MIN_PASSWORD_CHARS) == "x" * MIN_PASSWORD_CHARS


def test_a_signed_cookie_comes_back_as_its_session() -> None:
    signer = CookieSigner(SECRET)

    cookie, session = signer.issue(7, "scrypt$hash", now=1_000_000)

    assert signer.check(cookie, now=1_000_001) == session
    assert session.user_id == 7
    assert session.expires_at == 1_000_000 + 12 * 3600


@pytest.mark.parametrize("tamper", [
    lambda c: c.replace("c1.7.", "c1.8.", 1),  # another user
    lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),  # the MAC
    lambda c: ".".join(c.split(".")[:2] + [str(int(c.split(".")[2]) + 3600)]
                       + c.split(".")[3:]),  # a later expiry
    lambda c: c.rsplit(".", 1)[0],  # no MAC
    lambda c: c + ".extra",
    lambda c: "",
    lambda c: "é" + c,
])
def test_a_tampered_cookie_is_refused(tamper: object) -> None:
    signer = CookieSigner(SECRET)
    cookie, _ = signer.issue(7, "scrypt$hash", now=1_000_000)

    assert signer.check(tamper(cookie), now=1_000_001) is None  # type: ignore[operator]


def test_a_cookie_signed_with_another_secret_is_refused() -> None:
    cookie, _ = CookieSigner(b"t" * 32).issue(7, "scrypt$hash")

    assert CookieSigner(SECRET).check(cookie) is None


def test_an_expired_cookie_is_refused() -> None:
    signer = CookieSigner(SECRET, ttl_s=60)
    cookie, _ = signer.issue(7, "scrypt$hash", now=1_000_000)

    assert signer.check(cookie, now=1_000_059) is not None
    assert signer.check(cookie, now=1_000_060) is None
    assert signer.check(cookie, now=2_000_000) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = CookieSigner(SECRET)
    _, first = signer.issue(7, "scrypt$hash")
    _, second = signer.issue(7, "scrypt$hash")
    token = signer.token("csrf", first.sid)

    assert signer.check_token("csrf", first.sid, token)
    assert not signer.check_token("csrf", second.sid, token)
    assert not signer.check_token("login", first.sid, token)
    assert not signer.check_token("csrf", first.sid, None)
    assert not signer.check_token("csrf", first.sid, "")


def test_the_failure_limiter_refuses_after_the_limit_until_the_window_passes() -> None:
    limiter = FailureLimiter(limit=5, window_s=60)
    for second in range(5):
        assert limiter.retry_after("bea", now=100 + second) == 0
        limiter.failed("bea", now=100 + second)

    assert limiter.retry_after("bea", now=105) == pytest.approx(55)
    assert limiter.retry_after("other", now=105) == 0
    assert limiter.retry_after("bea", now=160.5) == 0  # the first failure left the window
