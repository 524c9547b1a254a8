from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysentry.core.credentials import extract_credential
from keysentry.core.decision import Reason

KEY = "sk_live_abc"
MISSING, INVALID = Reason.MISSING_KEY, Reason.INVALID_KEY


@pytest.mark.parametrize(
    ("authorization", "api_key", "expected"),
    [
        pytest.param([], [], MISSING, id="nothing"),
        pytest.param([f"Bearer {KEY}"], [], KEY, id="bearer"),
        pytest.param([f"bearer {KEY}"], [], KEY, id="lowercase"),
        pytest.param([f"BEARER {KEY}"], [], KEY, id="uppercase"),
        pytest.param([f"Bearer \t  {KEY}  "], [], KEY, id="tabs-and-spaces"),
        pytest.param([KEY], [], KEY, id="bare-key"),
        pytest.param(["Bearer"], [], INVALID, id="bearer-without-token"),
        pytest.param([""], [], MISSING, id="empty-header"),
        pytest.param(["Basic dXNlcjpwYXNz"], [], MISSING, id="other-scheme"),
        pytest.param([f"Bearer {KEY} extra"], [], INVALID, id="three-words"),
        pytest.param([f"Bearer {KEY}", f"Bearer {KEY}"], [], INVALID, id="two-headers"),
        pytest.param([], [KEY], KEY, id="x-api-key"),
        pytest.param([f"Bearer {KEY}"], [KEY], KEY, id="both-agree"),
        pytest.param([f"Bearer {KEY}"], ["sk_live_other"], INVALID, id="both-disagree"),
        pytest.param([], [KEY, KEY], INVALID, id="two-x-api-keys"),
        pytest.param([], ["a b"], INVALID, id="x-api-key-two-words"),
        pytest.param([], [""], INVALID, id="x-api-key-empty"),
        pytest.param(["Basic abc"], [KEY], KEY, id="basic-plus-x-api-key"),
        pytest.param(["Bearer " + "a" * 257], [], INVALID, id="token-too-long"),
        pytest.param(["Bearer " + "a" * 1_000_000], [], INVALID, id="one-megabyte"),
        pytest.param(["Bearer sk_live_\xe9\xff"], [], "sk_live_\xe9\xff", id="latin-1-passes-on"),
    ],
)
def test_extract_credential(
    authorization: list[str], api_key: list[str], expected: str | Reason
) -> None:
    assert extract_credential(authorization, api_key) == expected


@given(st.lists(st.binary(max_size=300), max_size=3), st.lists(st.binary(max_size=300), max_size=2))
def test_any_header_bytes_give_a_token_or_a_reason(auth: list[bytes], keys: list[bytes]) -> None:
    result = extract_credential(
        [a.decode("latin-1") for a in auth], [k.decode("latin-1") for k in keys]
    )
    assert isinstance(result, (str, Reason))
    if isinstance(result, str) and not isinstance(result, Reason):
        assert 0 < len(result) <= 256
        assert " " not in result
        assert "\t" not in result
