"""Tracking tokens: a signed, compact record of which request and model showed an offer where.

Format ``<payload>.<signature>`` in URL-safe base64 without padding. The payload is
``v2|request_id|offer_id|model_version|placement|member_id``; the signature is the first 16 bytes of
HMAC-SHA256 over it.
Events that carry the token are attributed to that request and model version; the token is bound to the
member and placement it was shown to, so an event of another member or screen cannot borrow it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

_VERSION = "v2"
_SIG_BYTES = 16


class InvalidTrackingToken(ValueError):
    """The token is malformed or its signature does not match."""


@dataclass(frozen=True)
class TrackingClaims:
    request_id: str
    offer_id: str
    model_version: str
    placement: str
    member_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TrackingSigner:
    """Signs and verifies tracking tokens with one HMAC key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("tracking key must be at least 16 bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # keyed once; copied per token

    def _sig(self, payload: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(payload)
        return mac.digest()[:_SIG_BYTES]

    def sign(self, request_id: str, offer_id: str, model_version: str, placement: str, member_id: str) -> str:
        payload = "|".join((_VERSION, request_id, offer_id, model_version, placement, member_id)).encode()
        return f"{_b64(payload)}.{_b64(self._sig(payload))}"

    def verify(self, token: str) -> TrackingClaims:
        """Claims of a valid token; raises :class:`InvalidTrackingToken` otherwise."""
        try:
            payload_text, sig_text = token.split(".", 1)
            payload, sig = _unb64(payload_text), _unb64(sig_text)
        except ValueError as exc:
            raise InvalidTrackingToken("malformed tracking token") from exc
        if not hmac.compare_digest(sig, self._sig(payload)):
            raise InvalidTrackingToken("tracking token signature does not match")
        parts = payload.decode("utf-8", errors="replace").split("|")
        if len(parts) != 6 or parts[0] != _VERSION:
            raise InvalidTrackingToken("unsupported tracking token version")
        return TrackingClaims(
            request_id=parts[1],
            offer_id=parts[2],
            model_version=parts[3],
            placement=parts[4],
            member_id=parts[5],
        )
