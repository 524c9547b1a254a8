from __future__ import annotations

import hashlib
import re
import string
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysentry.core.keys import (
    ALPHABET,
    BODY_LENGTH,
    CHECKSUM_LENGTH,
    MAX_KEY_LENGTH,
    PREFIX_PATTERN,
    base62,
    check_key,
    checksum,
    generate_key,
    hash_key,
    hashes_match,
    parse_key,
    select_candidate,
    sha256,
)
from keysentry.errors import KeyFormatError

prefixes = st.from_regex(rf"\A{PREFIX_PATTERN}\Z", fullmatch=True)


@given(prefixes)
def test_generated_key_round_trips(prefix: str) -> None:
    key = generate_key(prefix)
    parsed = parse_key(key.secret)
    assert parsed == key
    assert parsed.prefix == prefix
    assert key.secret.startswith(prefix + "_")
    assert len(key.secret) == len(prefix) + 1 + BODY_LENGTH
    assert "_" not in key.secret[len(prefix) + 1 :]


@given(st.text())
def test_any_text_parses_or_raises_key_format_error(text: str) -> None:
    try:
        parsed = parse_key(text)
    except KeyFormatError:
        return
    assert parsed.secret == text


@given(st.one_of(st.binary(), st.integers(), st.none(), st.lists(st.text())))
def test_non_strings_raise_key_format_error(value: object) -> None:
    with pytest.raises(KeyFormatError):
        parse_key(value)


def test_key_with_nul_bytes_and_unicode_is_rejected() -> None:
    key = generate_key("sk_live").secret
    for bad in [key + "\x00", "\x00" + key, key[:-1] + "é", key.replace("s", "ѕ", 1)]:  # noqa: RUF001 - a homoglyph on purpose
        with pytest.raises(KeyFormatError):
            parse_key(bad)


@given(st.data())
def test_any_single_character_change_breaks_the_checksum(data: st.DataObject) -> None:
    key = generate_key("sk_live").secret
    body_start = len("sk_live_")
    index = data.draw(st.integers(body_start, len(key) - 1))
    # a shift, not a filtered character: what is drawn must not depend on the random key,
    # or Hypothesis cannot replay an example (FlakyStrategyDefinition)
    shift = data.draw(st.integers(1, len(ALPHABET) - 1))
    replacement = ALPHABET[(ALPHABET.index(key[index]) + shift) % len(ALPHABET)]
    with pytest.raises(KeyFormatError):
        parse_key(key[:index] + replacement + key[index + 1 :])


def test_overlong_input_is_rejected_without_scanning_it() -> None:
    with pytest.raises(KeyFormatError, match="too long"):
        parse_key("sk_live_" + "a" * 1_000_000)
    assert MAX_KEY_LENGTH == 71


def test_error_messages_never_contain_the_input() -> None:
    key = generate_key("sk_live").secret
    broken = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(KeyFormatError) as info:
        parse_key(broken)
    assert broken not in str(info.value)
    assert broken[8:] not in repr(info.value)


def test_suffix_is_the_last_four_characters_and_repr_hides_the_secret() -> None:
    key = generate_key("sk_live")
    assert key.suffix == key.secret[-4:]
    assert key.secret not in repr(key)
    assert key.secret[8:20] not in repr(key)
    assert repr(key) == f"ParsedKey(prefix='sk_live', suffix='{key.suffix}')"


def test_hash_is_hex_sha256_of_the_whole_key() -> None:
    key = generate_key("sk_live")
    assert key.digest == hashlib.sha256(key.secret.encode()).hexdigest()
    assert hash_key(key.secret) == key.digest
    assert hashes_match(key.digest, hash_key(key.secret))
    assert not hashes_match(key.digest, hash_key(generate_key("sk_live").secret))


@given(st.binary(max_size=300))
def test_the_hot_path_sha256_is_hashlib_s(data: bytes) -> None:
    # the verifier hashes with CPython's own SHA-256 where there is one: same digests, over
    # one block and several
    assert sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()


def test_token_factory_is_injectable_and_checksum_is_deterministic() -> None:
    key = generate_key("ab", token_factory=lambda n: "x" * n)
    assert key.secret == "ab_" + "x" * 32 + checksum("ab_" + "x" * 32)


def test_a_bad_token_factory_fails_at_generation() -> None:
    with pytest.raises(KeyFormatError):
        generate_key("ab", token_factory=lambda n: "_" * n)


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("", id="empty"),
        pytest.param("a", id="too-short"),
        pytest.param("1abc", id="digit-first"),
        pytest.param("Sk_live", id="uppercase"),
        pytest.param("a" * 33, id="too-long"),
        pytest.param("sk-live", id="dash"),
    ],
)
def test_invalid_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(KeyFormatError):
        generate_key(prefix)


def test_random_part_uses_about_190_bits() -> None:
    keys = {generate_key("sk").secret for _ in range(200)}
    assert len(keys) == 200
    alphabet_seen = set("".join(k[3:35] for k in keys))
    assert alphabet_seen <= set(string.ascii_letters + string.digits)
    assert len(alphabet_seen) > 55  # all of base62, practically


@given(st.text(alphabet=string.printable, max_size=80))
def test_table_checksum_equals_plain_base62_of_crc32(text: str) -> None:
    assert checksum(text) == base62(zlib.crc32(text.encode("ascii")), 6)


_REFERENCE = re.compile(rf"({PREFIX_PATTERN})_([0-9A-Za-z]{{{BODY_LENGTH}}})", re.ASCII)


def _reference_check(text: str) -> str | None:
    """check_key's job, written plainly: a regex and base62() instead of the inline steps."""
    match = _REFERENCE.fullmatch(text)
    if match is None or len(text) > MAX_KEY_LENGTH:
        return None
    expected = base62(zlib.crc32(text[:-CHECKSUM_LENGTH].encode("ascii")), CHECKSUM_LENGTH)
    return match.group(1) if match.group(2)[-CHECKSUM_LENGTH:] == expected else None


def _near_keys() -> st.SearchStrategy[str]:
    def resealed(head: str) -> str:  # any head, with the checksum it should have
        return head + checksum(head)

    keys = prefixes.map(lambda p: generate_key(p).secret)
    one_changed = st.builds(
        lambda k, i, c: k[:i] + c + k[i + 1 :],
        keys,
        st.integers(0, 80),
        st.sampled_from("_aZ9-é \x00"),
    )
    sealed = st.builds(
        lambda p, body: resealed(f"{p}_{body}"),
        st.text(string.printable, max_size=40),
        st.text(alphabet=ALPHABET + "_", min_size=30, max_size=34),
    )
    return st.one_of(st.text(max_size=90), keys, one_changed, sealed)


@given(_near_keys())
def test_check_key_agrees_with_a_plain_reference_and_with_parse_key(text: str) -> None:
    # check_key is the hot path's inline version; parse_key explains its refusals
    prefix = check_key(text)
    assert prefix == _reference_check(text)
    if prefix is None:
        with pytest.raises(KeyFormatError):
            parse_key(text)
    else:
        assert parse_key(text).prefix == prefix


def test_select_candidate_compares_all_and_finds_current_or_previous() -> None:
    a, b, c = (generate_key("sk").digest for _ in range(3))
    assert select_candidate(a, [(b, None), (a, None)]) == 1
    assert select_candidate(c, [(a, c)]) == 0
    assert select_candidate(c, [(a, None), (b, None)]) is None
    assert select_candidate(c, []) is None
