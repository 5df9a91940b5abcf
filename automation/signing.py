"""Compact signed tokens for the public tracking URLs.

A token carries only ids: the message id, the message's random nonce, the template
version, the kind of link and, for a click, the link index. The ids are encrypted as well
as signed, so a URL shows no sequential id and cannot be altered or forged; the first
byte names the key, so tokens made before a key rotation (``NURTURE_OLD_SECRET_KEYS``)
still verify.

Layout (48 URL-safe characters, 36 bytes)::

    blob   = key_id(1) ‖ SIV-encrypted(message_id(7) ‖ nonce(4) ‖ version_id(4)) ‖ siv_tag(8)
    token  = blob(24) ‖ kind(1) ‖ link_index(3) ‖ PRF(link_key, blob ‖ kind ‖ link_index)(8)

The blob is computed once per message; each of the message's links then costs one keyed
BLAKE2b, which matters at one token per link per recipient. A change to any byte makes
verification fail.

Public URLs: ``/t/o/<token>`` open pixel, ``/t/c/<token>`` click, ``/u/<token>``
unsubscribe, ``/p/<token>`` preferences, ``/v/<token>`` view in browser.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

_INFO = b"nurture/tracking-tokens/v1"
_PAYLOAD = 15  # message id 7 + nonce 4 + version 4
_SIV_TAG = 8
_BLOB = 1 + _PAYLOAD + _SIV_TAG  # 24 bytes: a whole number of base64 quanta
_SUFFIX = 1 + 3 + 8  # kind, link index, tag: 12 bytes
TOKEN_LENGTH = (_BLOB + _SUFFIX) * 4 // 3  # 48 characters
MAX_MESSAGE_ID = 2**56 - 1
MAX_LINKS = 2**24


class TokenKind(enum.IntEnum):
    OPEN = 1
    CLICK = 2
    UNSUBSCRIBE = 3
    PREFERENCES = 4
    VIEW = 5
    CONFIRM = 6  # double opt-in confirmation of a form submission


PATHS = {
    TokenKind.OPEN: "/t/o/",
    TokenKind.CLICK: "/t/c/",
    TokenKind.UNSUBSCRIBE: "/u/",
    TokenKind.PREFERENCES: "/p/",
    TokenKind.VIEW: "/v/",
    TokenKind.CONFIRM: "/f/confirm/",
}


class TokenClaims(NamedTuple):
    kind: TokenKind
    message_id: int
    nonce: int
    template_version_id: int
    link_index: int | None = None


@dataclass(frozen=True)
class _Key:
    key_id: int
    mac: bytes
    enc: bytes
    link: bytes


def _derive(secret: str) -> _Key:
    root = hmac.digest(secret.encode(), _INFO, "sha256")
    return _Key(
        key_id=hmac.digest(root, b"id", "sha256")[0],
        mac=hmac.digest(root, b"mac", "sha256"),
        enc=hmac.digest(root, b"enc", "sha256"),
        link=hmac.digest(root, b"link", "sha256"),
    )


def _prf(key: bytes, data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, key=key, digest_size=size).digest()


class _Verifier(NamedTuple):
    """A key's three PRFs as keyed BLAKE2b states, copied per token: keying a fresh state
    costs as much again as hashing the token's few bytes (verification runs per hit)."""

    link: Any  # _prf(key.link, ·, 8)
    enc: Any  # _prf(key.enc, ·, _PAYLOAD)
    mac: Any  # _prf(key.mac, ·, _SIV_TAG)

    @classmethod
    def of(cls, key: _Key) -> _Verifier:
        return cls(
            hashlib.blake2b(key=key.link, digest_size=8),
            hashlib.blake2b(key=key.enc, digest_size=_PAYLOAD),
            hashlib.blake2b(key=key.mac, digest_size=_SIV_TAG),
        )


def _keyed(state: Any, data: bytes) -> bytes:
    h = state.copy()
    h.update(data)
    return bytes(h.digest())


def _xor(data: bytes, stream: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).decode("ascii")


# "-" and "_" to the standard alphabet; "+" and "/" (not URL-safe) to a byte strict
# decoding rejects.
_FROM_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")


def _unb64(token: str) -> bytes | None:
    """The bytes of ASCII URL-safe base64 ``token`` (length a multiple of 4); None when it
    holds any other character. For unpadded text of such a length this is the one
    spelling ``_b64`` gives (a padded one decodes to fewer bytes: callers check the
    length)."""
    try:
        return binascii.a2b_base64(token.encode().translate(_FROM_URLSAFE), strict_mode=True)
    except binascii.Error:
        return None


_TAILS: dict[tuple[int, int], bytes] = {}


def _tail(kind: int, link_index: int) -> bytes:
    tail = _TAILS.get((kind, link_index))
    if tail is None:
        tail = bytes((kind,)) + link_index.to_bytes(3, "big")
        if len(_TAILS) < 4096:
            _TAILS[(kind, link_index)] = tail
    return tail


class MessageTokens:
    """Every token of one message; made per recipient at render time."""

    __slots__ = ("_link_mac", "_prefix", "blob")

    def __init__(self, key: _Key, message_id: int, nonce: int, version_id: int) -> None:
        if not 0 <= message_id <= MAX_MESSAGE_ID:
            raise ValueError("message id out of range for a token")
        payload = (
            message_id.to_bytes(7, "big")
            + (nonce & 0xFFFFFFFF).to_bytes(4, "big")
            + version_id.to_bytes(4, "big")
        )
        head = bytes((key.key_id,))
        siv = _prf(key.mac, head + payload, _SIV_TAG)
        self.blob = head + _xor(payload, _prf(key.enc, siv, _PAYLOAD)) + siv
        self._prefix = _b64(self.blob)
        self._link_mac = hashlib.blake2b(self.blob, key=key.link, digest_size=8)

    def token(self, kind: TokenKind, link_index: int = 0) -> str:
        tail = _tail(kind, link_index)
        mac = self._link_mac.copy()
        mac.update(tail)
        return self._prefix + _b64(tail + mac.digest())

    def url(self, base_url: str, kind: TokenKind, link_index: int = 0) -> str:
        return base_url + PATHS[kind] + self.token(kind, link_index)

    def click_urls(self, base_url: str, count: int) -> list[str]:
        """The URLs of links 0 … count-1: `url(base_url, CLICK, i)` for each, in one loop."""
        head = base_url + PATHS[TokenKind.CLICK] + self._prefix
        mac, b2a, urlsafe = self._link_mac, binascii.b2a_base64, _URLSAFE
        out = []
        for index in range(count):
            tail = _tail(TokenKind.CLICK, index)
            link = mac.copy()
            link.update(tail)
            out.append(head + b2a(tail + link.digest(), newline=False).translate(urlsafe).decode())
        return out


class TokenSigner:
    """Makes and verifies tokens; the first key signs, every key verifies."""

    def __init__(self, secret_key: str, old_keys: Iterable[str] = ()) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign tracking links")
        self._current = _derive(secret_key)
        self._keys = [self._current] + [_derive(k) for k in old_keys if k and k != secret_key]
        self._verifiers: dict[int, list[_Verifier]] = {}
        for key in self._keys:
            self._verifiers.setdefault(key.key_id, []).append(_Verifier.of(key))

    @classmethod
    def from_settings(cls, settings: Any) -> TokenSigner:
        return cls(settings.secret_key, settings.old_secret_keys)

    def for_message(self, message_id: int, nonce: int, version_id: int) -> MessageTokens:
        return MessageTokens(self._current, message_id, nonce, version_id)

    def make(
        self,
        kind: TokenKind,
        message_id: int,
        nonce: int,
        version_id: int,
        link_index: int = 0,
    ) -> str:
        return self.for_message(message_id, nonce, version_id).token(kind, link_index)

    def verify(self, token: str, kind: TokenKind) -> TokenClaims | None:
        """The claims of a genuine token of ``kind``; None for anything else."""
        if not isinstance(token, str) or len(token) != TOKEN_LENGTH or not token.isascii():
            return None
        raw = _unb64(token)
        if raw is None or len(raw) != _BLOB + _SUFFIX:
            return None
        blob, tail, tag = raw[:_BLOB], raw[_BLOB:-8], raw[-8:]
        if tail[0] != kind or (kind is not TokenKind.CLICK and tail[1:] != b"\0\0\0"):
            return None
        for key in self._verifiers.get(blob[0], ()):
            if not hmac.compare_digest(_keyed(key.link, blob + tail), tag):
                continue
            siv = blob[-_SIV_TAG:]
            payload = _xor(blob[1:-_SIV_TAG], _keyed(key.enc, siv))
            if not hmac.compare_digest(_keyed(key.mac, blob[:1] + payload), siv):
                continue
            return TokenClaims(
                kind,
                int.from_bytes(payload[:7], "big"),
                int.from_bytes(payload[7:11], "big"),
                int.from_bytes(payload[11:15], "big"),
                int.from_bytes(tail[1:], "big") if kind is TokenKind.CLICK else None,
            )
        return None


# --- the site visitor's identifier --------------------------------------------------------
#
# Set by the click redirect on visitors who arrive from a tracked email link, sent back by
# the site snippet so their page views land on their contact. It carries the contact id
# encrypted and signed (the same SIV construction as the message blob, with its own
# domain), so it names no guessable id and cannot be forged or altered.
#
#   identity = key_id(1) ‖ SIV-encrypted(contact_id(8) ‖ issued_hour(4)) ‖ siv_tag(11)

_IDENTITY_DOMAIN = b"nurture/contact-identity"
IDENTITY_LENGTH = 32  # 24 bytes of URL-safe base64
IDENTITY_MAX_AGE_HOURS = 400 * 24


def _identity_siv(key: _Key, head: bytes, payload: bytes) -> bytes:
    return _prf(key.mac, _IDENTITY_DOMAIN + head + payload, 11)


def _identity_stream(key: _Key, siv: bytes) -> bytes:
    return _prf(key.enc, _IDENTITY_DOMAIN + siv, 12)


def make_identity(signer: TokenSigner, contact_id: int, now_hour: int) -> str:
    """The visitor identifier of ``contact_id`` (``now_hour``: hours since the epoch)."""
    key = signer._current
    head = bytes((key.key_id,))
    payload = contact_id.to_bytes(8, "big") + (now_hour & 0xFFFFFFFF).to_bytes(4, "big")
    siv = _identity_siv(key, head, payload)
    return _b64(head + _xor(payload, _identity_stream(key, siv)) + siv)


def verify_identity(signer: TokenSigner, token: str, now_hour: int) -> int | None:
    """The contact id of a genuine, unexpired identifier; None for anything else."""
    if not isinstance(token, str) or len(token) != IDENTITY_LENGTH or not token.isascii():
        return None
    raw = _unb64(token)
    if raw is None or len(raw) != 24:
        return None
    for key in signer._keys:
        if key.key_id != raw[0]:
            continue
        siv = raw[13:]
        payload = _xor(raw[1:13], _identity_stream(key, siv))
        if not hmac.compare_digest(_identity_siv(key, raw[:1], payload), siv):
            continue
        issued = int.from_bytes(payload[8:], "big")
        if not 0 <= now_hour - issued <= IDENTITY_MAX_AGE_HOURS:
            return None
        return int.from_bytes(payload[:8], "big")
    return None


def message_id_header(tokens: MessageTokens, domain: str) -> str:
    """A stable, opaque Message-ID for a message row. It is the message's view token, so
    a bounce or reply that quotes it leads back to the message without a stored column."""
    return f"<{tokens.token(TokenKind.VIEW)}@{domain}>"


# --- site identity verification -----------------------------------------------------------
# A site that knows who its visitor is (a logged-in customer) proves it to the collect
# endpoint the way Intercom's identity verification does: its server computes
# HMAC-SHA256(site secret, email) and the page passes it to ``nurture.identify``. Each site
# origin has its own secret, derived from the secret key (nothing stored; a key rotation
# gives new secrets, and hashes made with an old key's secret verify until it is dropped).

_SITE_SECRET_DOMAIN = b"nurture/site-identity-secret\x00"


def _site_secret(key: _Key, origin: str) -> str:
    return hmac.digest(key.mac, _SITE_SECRET_DOMAIN + origin.encode(), "sha256").hex()


def site_identity_secret(signer: TokenSigner, origin: str) -> str:
    """The identity secret of the site ``origin`` (normalised, ``https://shop.example``):
    64 hex characters, for the site's server only."""
    return _site_secret(signer._current, origin)


def identity_hash(secret: str, email: str) -> str:
    """What the site computes: hex HMAC-SHA256 keyed with the secret (its ASCII text) of
    the address in lower case."""
    return hmac.new(secret.encode(), email.strip().lower().encode(), "sha256").hexdigest()


def verify_identity_hash(signer: TokenSigner, origin: str, email: str, digest: str) -> bool:
    """True when ``digest`` is the identity hash of ``email`` for the site ``origin``."""
    if not isinstance(digest, str) or len(digest) != 64 or not digest.isascii():
        return False
    offered = digest.lower()
    return any(
        hmac.compare_digest(identity_hash(_site_secret(key, origin), email), offered)
        for key in signer._keys
    )
