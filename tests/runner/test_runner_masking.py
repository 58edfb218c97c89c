"""SecretMasker: a secret must not survive in a log line in any common encoding."""

from __future__ import annotations

import base64
import json
import random
import re
import string
import threading
import time
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.runner.masking import MASK, SecretMasker, secret_variants

SECRET = "s3cr3t-Value/with+specials&=?"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


def test_plain_secret_is_masked_everywhere_in_the_line() -> None:
    masker = SecretMasker([SECRET])
    assert masker.mask(f"token={SECRET} again:{SECRET}.") == "token=*** again:***."


def test_text_without_secrets_is_returned_unchanged() -> None:
    masker = SecretMasker([SECRET])
    line = "compiling foo.c -O2 \x1b[32mok\x1b[0m"
    assert masker.mask(line) is line


def test_empty_masker_changes_nothing() -> None:
    masker = SecretMasker([])
    assert not masker
    assert masker.mask("anything") == "anything"


@pytest.mark.parametrize("secret", ["", "a", "on"])
def test_empty_and_very_short_secrets_are_ignored(secret: str) -> None:
    masker = SecretMasker([secret])
    assert not masker
    assert masker.mask("a long line mentioning on and a") == "a long line mentioning on and a"


def test_three_character_secret_is_masked() -> None:
    assert SecretMasker(["xyz"]).mask("a-xyz-b") == "a-***-b"


@pytest.mark.parametrize("encode", [b64, b64url])
@pytest.mark.parametrize("strip_padding", [False, True])
@pytest.mark.parametrize("secret", ["abcd", "abcde", "abcdef", SECRET, "pässwörd-ünïcode"])
def test_base64_of_the_secret_alone_is_masked(
    encode: object, strip_padding: bool, secret: str
) -> None:
    assert callable(encode)
    encoded = encode(secret)
    if strip_padding:
        encoded = encoded.rstrip("=")
    masked = SecretMasker([secret]).mask(f"value: {encoded} end")
    assert masked == "value: *** end"


@pytest.mark.parametrize("user", ["u", "us", "use", "user", "admin", "deploy-bot"])
@pytest.mark.parametrize("encode", [b64, b64url])
def test_basic_auth_header_hides_the_secret_at_every_alignment(user: str, encode: object) -> None:
    assert callable(encode)
    # The user names cover all three offsets of the secret inside the encoded credentials.
    secret = "hunter2-Very-Secret"
    header = f"Authorization: Basic {encode(f'{user}:{secret}')}"
    masked = SecretMasker([secret]).mask(header)
    assert MASK in masked
    # Only the encoded user name survives, plus at most one character that mixes its last bits
    # with the secret's first: nothing of the secret can be decoded back.
    visible = masked.split("Basic ", 1)[1]
    assert visible.endswith(MASK)
    assert len(visible) - len(MASK) <= len(encode(f"{user}:").rstrip("=")) + 1


def test_secret_inside_longer_base64_blob_is_masked() -> None:
    secret = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    config = json.dumps({"auths": {"ghcr.io": {"auth": f"bot:{secret}", "x": 1}}})
    blob = b64(config)
    masked = SecretMasker([secret]).mask(blob)
    assert MASK in masked
    head = masked.partition(MASK)[0]
    # Re-decoding what is left must not reveal any sizeable part of the secret.
    leftover = base64.b64decode(head[: len(head) // 4 * 4] + "==", validate=False)
    assert secret[:6].encode() not in leftover


def test_url_encoded_forms_are_masked() -> None:
    masker = SecretMasker([SECRET])
    lower_escapes = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote(SECRET, safe=""))
    for form in (quote(SECRET, safe=""), quote_plus(SECRET), lower_escapes):
        assert form != SECRET
        assert masker.mask(f"GET /login?password={form}&x=1") == "GET /login?password=***&x=1"


def test_url_encoded_lowercase_hex_escapes_are_masked() -> None:
    secret = "a/b c+d"
    lower = quote(secret, safe="").replace("%2F", "%2f").replace("%2B", "%2b")
    assert SecretMasker([secret]).mask(f"url=https://x/?p={lower}") == "url=https://x/?p=***"


def test_json_escaped_form_is_masked() -> None:
    secret = 'quote"and\\backslash'
    line = json.dumps({"password": secret})
    assert SecretMasker([secret]).mask(line) == '{"password": "***"}'


def test_multiline_secret_is_masked_line_by_line() -> None:
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
        "QyNTUxOQAAACBmgRwB1p2Zh0vNfWbZbRk1gT5XdN2cH9yQo2lT0bq8xAAAAJgAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )
    masker = SecretMasker([key])
    log_lines = ["+ cat id_ed25519", *key.splitlines(), "done"]
    masked = [masker.mask(line) for line in log_lines]
    assert masked == ["+ cat id_ed25519", MASK, MASK, MASK, MASK, "done"]
    # The whole key in one chunk of text, and base64 of it, are masked too.
    assert masker.mask(f"key: {key}") == f"key: {MASK}"
    assert masker.mask(b64(key)) == MASK


def test_multiline_secret_ignores_short_lines() -> None:
    masker = SecretMasker(["{\nab\nlong-enough-line\n}"])
    assert masker.mask("{") == "{"
    assert masker.mask("ab") == "ab"
    assert masker.mask("x long-enough-line y") == f"x {MASK} y"


def test_longer_secret_wins_over_a_secret_it_contains() -> None:
    masker = SecretMasker(["pass", "password123"])
    assert masker.mask("pw=password123;") == "pw=***;"
    assert masker.mask("pw=pass;") == "pw=***;"


def test_overlapping_secrets_are_masked_as_one_span() -> None:
    masker = SecretMasker(["abcdef", "defghi"])
    assert masker.mask("x abcdefghi y") == "x *** y"
    assert masker.mask("x defghiabcdef y") == "x *** y"


def test_adjacent_repeats_collapse_into_one_mask() -> None:
    assert SecretMasker(["tok"]).mask("toktoktok!") == "***!"


def test_add_masks_secrets_learned_later() -> None:
    masker = SecretMasker(["first-secret"])
    assert masker.mask("second-secret") == "second-secret"
    masker.add("second-secret")
    assert masker.mask("first-secret second-secret") == "*** ***"
    masker.add("x")  # too short: ignored, not an error
    assert masker.mask("x") == "x"


def test_regex_metacharacters_in_secrets_are_literal() -> None:
    masker = SecretMasker([".*+?[](){}|^$\\"])
    assert masker.mask("abc") == "abc"
    assert masker.mask("v=.*+?[](){}|^$\\;") == "v=***;"


def test_variants_include_every_documented_form() -> None:
    variants = secret_variants("user:pa ss/word")
    assert "user:pa ss/word" in variants
    assert b64("user:pa ss/word") in variants
    assert b64url("user:pa ss/word").rstrip("=") in variants
    assert quote("user:pa ss/word", safe="") in variants
    assert quote_plus("user:pa ss/word") in variants
    assert all(len(v) >= 3 for v in variants)


def test_masking_100k_lines_with_10_secrets_is_fast() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "!@#/+-_"
    secrets = ["".join(rng.choices(alphabet, k=rng.randint(12, 40))) for _ in range(10)]
    masker = SecretMasker(secrets)
    lines = [
        f"2024-05-01T10:00:{i % 60:02d} [build] compiling src/module_{i}.py -> build/{i}.o ok"
        for i in range(100_000)
    ]
    lines[1234] += f" token={secrets[3]}"
    lines[5678] += f" Authorization: Basic {b64('ci:' + secrets[7])}"

    started = time.perf_counter()
    masked = [masker.mask(line) for line in lines]
    elapsed = time.perf_counter() - started

    assert secrets[3] not in masked[1234]
    assert MASK in masked[5678]
    assert masked[0] == lines[0]
    assert elapsed < 1.0, f"masking took {elapsed:.2f}s"


def test_mask_while_adding_from_another_thread() -> None:
    masker = SecretMasker(["initial-secret"])
    errors: list[BaseException] = []

    def add_many() -> None:
        try:
            for i in range(200):
                masker.add(f"secret-number-{i:04d}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=add_many)
    thread.start()
    for _ in range(2000):
        assert masker.mask("initial-secret") == MASK
    thread.join()
    assert not errors
    assert masker.mask("secret-number-0199") == MASK


SECRET_CHARS = string.ascii_letters + string.digits + "+/=%-_:\n"


@settings(max_examples=300, deadline=None, database=None)
@given(
    secrets=st.lists(st.text(SECRET_CHARS, min_size=3, max_size=24), min_size=1, max_size=5),
    filler=st.lists(st.text(SECRET_CHARS, max_size=8), min_size=1, max_size=6),
    picks=st.lists(st.integers(min_value=0, max_value=4), max_size=6),
)
def test_no_secret_survives_in_any_mix_of_text(
    secrets: list[str], filler: list[str], picks: list[int]
) -> None:
    # Filler text with secrets dropped in between, so secrets touch each other and the filler.
    pieces: list[str] = []
    for i, fill in enumerate(filler):
        pieces.append(fill)
        if i < len(picks):
            pieces.append(secrets[picks[i] % len(secrets)])
    text = "".join(pieces)
    masked = SecretMasker(secrets).mask(text)
    for secret in secrets:
        for part in [secret, *secret.splitlines()]:
            if len(part.strip()) >= 3:
                assert part.strip() not in masked
