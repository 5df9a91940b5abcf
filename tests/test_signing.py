"""Tracking tokens: compact, URL-safe, carry only ids, verify only as made."""

from __future__ import annotations

import base64
import re

from hypothesis import given
from hypothesis import strategies as st

from automation.config import load_settings
from automation.signing import PATHS, TOKEN_LENGTH, TokenKind, TokenSigner

SIGNER = TokenSigner("current-secret-" + "k" * 40)


def test_a_token_round_trips_its_ids():
    tokens = SIGNER.for_message(123_456_789, 0xDEADBEEF, 42)
    claims = SIGNER.verify(tokens.token(TokenKind.CLICK, 7), TokenKind.CLICK)
    assert claims is not None
    assert (claims.message_id, claims.nonce, claims.template_version_id, claims.link_index) == (
        123_456_789,
        0xDEADBEEF,
        42,
        7,
    )
    opened = SIGNER.verify(tokens.token(TokenKind.OPEN), TokenKind.OPEN)
    assert opened is not None and opened.link_index is None


def test_tokens_are_url_safe_compact_and_show_no_sequential_id():
    a = SIGNER.make(TokenKind.OPEN, 1000, 5, 1)
    b = SIGNER.make(TokenKind.OPEN, 1001, 5, 1)
    for token in (a, b):
        assert len(token) == TOKEN_LENGTH <= 48
        assert re.fullmatch(r"[A-Za-z0-9_\-]+", token)
    # Consecutive ids share nothing but the key byte: the ids are encrypted.
    assert a[2:30] != b[2:30]
    assert sum(x == y for x, y in zip(a[2:], b[2:], strict=True)) < 10


def test_a_token_of_one_kind_does_not_verify_as_another():
    token = SIGNER.make(TokenKind.OPEN, 1, 2, 3)
    for kind in TokenKind:
        assert (SIGNER.verify(token, kind) is not None) == (kind is TokenKind.OPEN)


@given(st.integers(min_value=0, max_value=TOKEN_LENGTH - 1), st.sampled_from("AQgw_-0z"))
def test_a_tampered_token_fails_to_verify(position, char):
    token = SIGNER.make(TokenKind.CLICK, 987_654, 77, 3, link_index=2)
    tampered = token[:position] + char + token[position + 1 :]
    if tampered != token:
        assert SIGNER.verify(tampered, TokenKind.CLICK) is None


def test_truncated_padded_and_garbage_tokens_fail_to_verify():
    token = SIGNER.make(TokenKind.UNSUBSCRIBE, 5, 6, 7)
    for bad in (
        token[:-1],
        token[:20],
        token + "A",
        token + "==",
        "",
        "x" * TOKEN_LENGTH,
        "é" * TOKEN_LENGTH,
        token.replace("-", "+").replace("_", "/"),
        base64.urlsafe_b64encode(b"\0" * 36).decode(),
    ):
        assert SIGNER.verify(bad, TokenKind.UNSUBSCRIBE) is None, bad


def test_a_token_from_another_key_fails_and_an_old_key_still_verifies():
    old = TokenSigner("old-secret-" + "o" * 40)
    token = old.make(TokenKind.VIEW, 11, 12, 13)
    assert SIGNER.verify(token, TokenKind.VIEW) is None
    rotated = TokenSigner("current-secret-" + "k" * 40, old_keys=["old-secret-" + "o" * 40])
    claims = rotated.verify(token, TokenKind.VIEW)
    assert claims is not None and claims.message_id == 11
    assert rotated.make(TokenKind.VIEW, 11, 12, 13) == SIGNER.make(TokenKind.VIEW, 11, 12, 13)


def test_keys_come_from_the_secret_key_and_old_keys_setting(tmp_path):
    settings = load_settings(
        {
            "NURTURE_VAR_DIR": str(tmp_path),
            "NURTURE_SECRET_KEY": "new-" + "n" * 40,
            "NURTURE_OLD_SECRET_KEYS": "old-" + "o" * 40 + ", older-" + "p" * 40,
        }
    )
    signer = TokenSigner.from_settings(settings)
    token = TokenSigner("older-" + "p" * 40).make(TokenKind.PREFERENCES, 1, 2, 3)
    assert signer.verify(token, TokenKind.PREFERENCES) is not None


def test_click_urls_are_the_click_tokens_of_each_link():
    tokens = SIGNER.for_message(9, 8, 7)
    base = "https://mail.example.com"
    assert tokens.click_urls(base, 3) == [tokens.url(base, TokenKind.CLICK, i) for i in range(3)]


def test_public_urls_have_their_paths():
    tokens = SIGNER.for_message(1, 2, 3)
    base = "https://mail.example.com"
    assert tokens.url(base, TokenKind.OPEN).startswith(base + "/t/o/")
    assert tokens.url(base, TokenKind.CLICK, 4).startswith(base + "/t/c/")
    assert tokens.url(base, TokenKind.UNSUBSCRIBE).startswith(base + "/u/")
    assert tokens.url(base, TokenKind.PREFERENCES).startswith(base + "/p/")
    assert tokens.url(base, TokenKind.VIEW).startswith(base + "/v/")
    assert set(PATHS) == set(TokenKind)
