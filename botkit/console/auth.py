"""Console accounts: password hashes, signed session cookies and login throttling.

Passwords are hashed with scrypt (n=2**14, r=8, p=1, a 16-byte random salt) and stored
as ``scrypt$n$r$p$<salt>$<hash>`` (standard base64). A session is a cookie signed with
HMAC-SHA256 under the console secret (``<data_dir>/console_secret``): it names the
account, when it expires, a random session id (from which the CSRF token is derived)
and a fingerprint of the password hash, so changing a password logs every session of
that account out. Nothing here touches HTTP or the database.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botkit.errors import BotkitError, ConfigError

#: scrypt's cost: 16 MiB of memory and about 50 ms of one core per hash.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_CHARS = 10
MAX_PASSWORD_CHARS = 1024
SESSION_TTL_S = 12 * 3600
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_COOKIE_VERSION = "c1"
_MAX_MEMORY = 64 * 1024 * 1024


class PasswordError(BotkitError):
    """A password that may not be used (too short, too long)."""


def check_new_password(password: str) -> str:
    """``password`` if it may be set, else :class:`PasswordError` saying why not."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordError(
            f"the password must be at least {MIN_PASSWORD_CHARS} characters long"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise PasswordError(f"the password must be at most {MAX_PASSWORD_CHARS} characters long")
    return password


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise BotkitError(
            f"the username {username!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_MAX_MEMORY
    )


def hash_password(password: str) -> str:
    """``scrypt$16384$8$1$<salt>$<hash>``: a fresh salt each time."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    encode = base64.b64encode
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{encode(salt).decode('ascii')}${encode(digest).decode('ascii')}")


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed hash never matches.

    The comparison takes the same time wherever the first differing byte is.
    """
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
            and 16 <= len(expected) <= 64 and salt):
        return False
    try:
        actual = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_or_waste_time(password: str, stored: str | None) -> bool:
    """:func:`verify_password`; with no account (``stored`` None) a wrong username takes as
    long as a wrong password, so timing does not tell which usernames exist."""
    if stored is None:
        verify_password(password, _dummy_hash())
        return False
    return verify_password(password, stored)


def password_fingerprint(password_hash: str) -> str:
    """A short digest of a stored hash: a session is valid only while it matches."""
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ConsoleSession:
    """What a valid session cookie says."""

    user_id: int
    expires_at: int
    """Unix time after which the cookie is refused."""
    sid: str
    """A random id of this login; the CSRF token is derived from it."""
    fingerprint: str
    """:func:`password_fingerprint` of the account's hash when the session began."""


class CookieSigner:
    """Issues and checks ``c1.<user>.<expires>.<sid>.<fingerprint>.<mac>`` cookies."""

    def __init__(self, secret: bytes, ttl_s: int = SESSION_TTL_S) -> None:
        if len(secret) < 16:
            raise ValueError("the console secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self, user_id: int, password_hash: str, *, now: float | None = None
    ) -> tuple[str, ConsoleSession]:
        now = time.time() if now is None else now
        session = ConsoleSession(
            user_id=user_id, expires_at=int(now) + self.ttl_s, sid=_b64(secrets.token_bytes(18)),
            fingerprint=password_fingerprint(password_hash),
        )
        payload = (f"{_COOKIE_VERSION}.{session.user_id}.{session.expires_at}."
                   f"{session.sid}.{session.fingerprint}")
        return f"{payload}.{self._mac(payload)}", session

    def check(self, cookie: str, *, now: float | None = None) -> ConsoleSession | None:
        """The session, or None when the cookie is malformed, tampered with or expired."""
        if not cookie.isascii() or len(cookie) > 512:
            return None
        payload, _, mac = cookie.rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return None
        parts = payload.split(".")
        if len(parts) != 5 or parts[0] != _COOKIE_VERSION:
            return None
        _, user, expires, sid, fingerprint = parts
        if not (user.isdigit() and expires.isdigit()):
            return None
        now = time.time() if now is None else now
        if int(expires) <= now:
            return None
        return ConsoleSession(int(user), int(expires), sid, fingerprint)

    def token(self, purpose: str, value: str) -> str:
        """An HMAC of ``value`` for ``purpose`` (CSRF tokens: ``token("csrf", sid)``)."""
        return self._mac(f"{purpose}:{value}")

    def check_token(self, purpose: str, value: str, token: str | None) -> bool:
        if not token or not token.isascii():
            return False
        return hmac.compare_digest(token, self.token(purpose, value))


class FailureLimiter:
    """At most ``limit`` failures per key in any ``window_s`` seconds (per process).

    Only failures count, so people who type their password right are never held up;
    once a key has ``limit`` failures in the window, every attempt is refused (before
    the password is even checked) until the oldest of them leaves the window.
    """

    def __init__(self, limit: int = 5, window_s: float = 60.0, *, max_keys: int = 50_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str, *, now: float | None = None) -> float:
        """0 when an attempt is allowed, else the seconds until one is."""
        now = time.monotonic() if now is None else now
        seen = self._failures.get(key)
        if seen is None:
            return 0.0
        while seen and seen[0] <= now - self.window_s:
            seen.popleft()
        if not seen:
            del self._failures[key]
            return 0.0
        if len(seen) < self.limit:
            return 0.0
        return max(seen[0] + self.window_s - now, 0.001)

    def failed(self, key: str, *, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        seen = self._failures.pop(key, None) or deque()
        seen.append(now)
        while len(seen) > self.limit:
            seen.popleft()
        self._failures[key] = seen
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)


def load_secret(config: Any) -> bytes:
    """The console's signing secret, kept in ``<data_dir>/console_secret`` (made if missing).

    Kept on disk so that logins survive a restart; delete the file to log everyone out.
    """
    path = Path(config.data_dir) / "console_secret"
    try:
        secret = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ConfigError(f"{path} is not a hex secret; delete it to make a new one") from exc
    else:
        if len(secret) < 16:
            raise ConfigError(f"{path} holds a secret under 16 bytes; delete it to make a new one")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return load_secret(config)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret.hex() + "\n")
    return secret


__all__ = [
    "CookieSigner",
    "ConsoleSession",
    "FailureLimiter",
    "MIN_PASSWORD_CHARS",
    "PasswordError",
    "check_new_password",
    "hash_password",
    "load_secret",
    "password_fingerprint",
    "verify_password",
]
