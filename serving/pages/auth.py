"""Sessions of the marketer pages: a login with the admin API key sets a signed, HTTP-only, SameSite=Strict
cookie; every form carries a CSRF token bound to that session.

The cookie is an itsdangerous timestamped signature of ``{"csrf": <random token>}``. Its signing key is
derived from the admin API key (HMAC), so every worker agrees without a setting of its own, and changing the
API key ends every session. The login form itself is protected by a double-submit token (a signed cookie
holding the same random value as the form's hidden field).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "recsys_session"
LOGIN_COOKIE = "recsys_login"
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_MAX_AGE_S = 3600


@dataclass(frozen=True)
class Session:
    csrf: str


class SessionSigner:
    """Issues and reads session and login cookies with a key derived from the admin API key."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key.encode()
        secret = hmac.new(self._api_key, b"recsys-pages-session-v1", hashlib.sha256).hexdigest()
        self._session = URLSafeTimedSerializer(secret, salt="session")
        self._login = URLSafeTimedSerializer(secret, salt="login")

    def key_matches(self, given: str) -> bool:
        """Constant-time comparison of a submitted API key."""
        return hmac.compare_digest(given.encode(), self._api_key)

    def new_session(self) -> tuple[str, Session]:
        session = Session(csrf=secrets.token_urlsafe(32))
        return self._session.dumps({"csrf": session.csrf}), session

    def read_session(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self._session.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        return Session(csrf=data["csrf"])

    def new_login_token(self) -> tuple[str, str]:
        """(cookie value, form value) of the login form's double-submit token."""
        token = secrets.token_urlsafe(24)
        return self._login.dumps(token), token

    def login_token_ok(self, cookie: str | None, form_value: str) -> bool:
        if not cookie or not form_value:
            return False
        try:
            token = self._login.loads(cookie, max_age=LOGIN_MAX_AGE_S)
        except BadSignature:
            return False
        return isinstance(token, str) and hmac.compare_digest(token.encode(), form_value.encode())


def csrf_ok(session: Session, form_value: str | None) -> bool:
    return bool(form_value) and hmac.compare_digest(session.csrf.encode(), (form_value or "").encode())
