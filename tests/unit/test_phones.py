from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidInput
from engine.phones import (
    looks_e164,
    normalize,
    region_of,
    timezone_for,
    timezones_for,
    try_normalize,
    written,
)


@pytest.mark.parametrize(
    "raw",
    [
        "8 916 123-45-67",
        "+7 (916) 123-45-67",
        "79161234567",
        "89161234567",
        "9161234567",
        "  +7 916 123 45 67  ",
        "8 (916) 123-45-67 доб. 123",
        "8-916-123-45-67 ext 9",
        "+79161234567;ext=5",
        "tel:+7-916-123-45-67",
        "+7.916.123.45.67",
    ],
)
def test_russian_spellings_normalise_to_one_e164(raw: str) -> None:
    assert normalize(raw, "RU") == "+79161234567"


def test_region_is_case_insensitive() -> None:
    assert normalize("8 916 123-45-67", "ru") == "+79161234567"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        # The LIBRARY-NOTES trap: without the 00 -> + rewrite this is +700442079460958.
        ("0044 20 7946 0958", "RU", "+442079460958"),
        ("00 44 20 7946 0958", "RU", "+442079460958"),
        ("0044 20 7946 0958", "US", "+442079460958"),
        # Russia's own international prefix, with and without the pause after the 8.
        ("810 44 20 7946 0958", "RU", "+442079460958"),
        ("8 10 44 20 7946 0958", "RU", "+442079460958"),
        ("+44 20 7946 0958 ext. 12", "RU", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("(212) 555-0100", "US", "+12125550100"),
        ("011 44 20 7946 0958", "US", "+442079460958"),
        ("+1 212 555 0100", "RU", "+12125550100"),
        ("+800 1234 5678", "RU", "+80012345678"),
    ],
)
def test_international_and_other_regions(raw: str, region: str, expected: str) -> None:
    assert normalize(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("abc", "not a phone number"),
        ("+", "not a phone number"),
        ("123", "too short"),
        ("+7 916", "too short"),
        ("+7 916 123 45 678 9", "wrong number of digits"),
        ("+7 016 123 45 67", "not a valid number for RU"),
        # The region named is the number's own, not the default one.
        ("+1 212 055 0100", "not a valid number for US"),
        ("+999 1234 5678", "no valid country code"),
    ],
)
def test_invalid_numbers_say_what_and_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize(raw, "RU")
    assert repr(raw) in info.value.message
    assert why in info.value.message
    assert info.value.details["value"] == raw
    assert why in str(info.value.details["reason"])
    assert info.value.status == 400


def test_unknown_default_region_is_named() -> None:
    with pytest.raises(InvalidInput, match="'XX' is not a known region code"):
        normalize("8 916 123-45-67", "XX")


def test_no_default_region_needs_a_country_code() -> None:
    assert normalize("+7 916 123-45-67", "") == "+79161234567"
    with pytest.raises(InvalidInput, match="no valid country code"):
        normalize("8 916 123-45-67", "")


def test_non_text_is_invalid_input_not_a_crash() -> None:
    with pytest.raises(InvalidInput, match="expected text"):
        normalize(79161234567, "RU")  # type: ignore[arg-type]


def test_try_normalize() -> None:
    assert try_normalize("8 916 123-45-67", "RU") == "+79161234567"
    assert try_normalize("not a phone", "RU") is None
    assert try_normalize("", "RU") is None


@given(st.text(max_size=40))
def test_normalize_never_crashes_and_its_output_is_a_fixed_point(raw: str) -> None:
    result = try_normalize(raw, "RU")
    if result is not None:
        assert result.startswith("+")
        assert result[1:].isdigit()
        assert normalize(result, "RU") == result
        assert normalize(result, "US") == result


@given(st.from_regex(r"9[0-9]{9}", fullmatch=True))
def test_every_spelling_of_a_russian_mobile_agrees(nsn: str) -> None:
    canonical = try_normalize("+7" + nsn, "RU")
    spaced = f"8 ({nsn[:3]}) {nsn[3:6]}-{nsn[6:8]}-{nsn[8:]}"
    assert try_normalize("8" + nsn, "RU") == canonical
    assert try_normalize("7" + nsn, "RU") == canonical
    assert try_normalize(spaced, "RU") == canonical


def test_normalize_is_fast() -> None:
    # LIBRARY-NOTES measured 18–31 µs a parse; repeats come from the cache. Generous bound
    # so a busy CI machine does not flake: 2,000 distinct numbers well under a second.
    numbers = [f"8 916 {i // 10:03d}-{i % 100:02d}-{(i * 7) % 100:02d}" for i in range(2000)]
    started = time.perf_counter()
    for raw in numbers:
        normalize(raw, "RU")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("e164", "zone"),
    [
        ("+74951234567", "Europe/Moscow"),
        ("+74232222222", "Asia/Vladivostok"),
        ("+12125550100", "America/New_York"),
        ("+442079460958", "Europe/London"),
    ],
)
def test_timezone_of_a_single_zone_prefix(e164: str, zone: str) -> None:
    assert timezone_for(e164) == zone
    assert timezones_for(e164) == (zone,)


def test_ambiguous_prefix_gives_none_unless_the_preference_fits() -> None:
    zones = timezones_for("+79161234567")
    assert len(zones) > 1
    assert "Europe/Moscow" in zones
    assert timezone_for("+79161234567") is None
    assert timezone_for("+79161234567", prefer="Europe/Moscow") == "Europe/Moscow"
    # A preference that the number rules out is not used.
    assert timezone_for("+79161234567", prefer="America/New_York") is None
    # A single-zone prefix ignores the preference.
    assert timezone_for("+74951234567", prefer="Asia/Omsk") == "Europe/Moscow"


def test_unknown_zone_is_none() -> None:
    assert timezones_for("+80012345678") == ()
    assert timezone_for("+80012345678") is None
    assert timezone_for("+80012345678", prefer="Etc/Unknown") is None


def test_region_of() -> None:
    assert region_of("+79161234567") == "RU"
    assert region_of("+77012345678") == "KZ"
    assert region_of("+442079460958") == "GB"
    assert region_of("+12125550100") == "US"
    assert region_of("+80012345678") is None


@pytest.mark.parametrize("bad", ["89161234567", "+7 916 123 45 67", "", "+0123"])
def test_lookups_refuse_anything_but_e164(bad: str) -> None:
    with pytest.raises(InvalidInput, match=r"not an E\.164 number"):
        region_of(bad)
    with pytest.raises(InvalidInput, match=r"not an E\.164 number"):
        timezone_for(bad)


@pytest.mark.parametrize(
    ("text", "shaped"),
    [
        ("+79161234567", True),
        ("+70001234567", True),  # the shape only: not a valid number
        ("+7 916 123-45-67", False),
        ("79161234567", False),
        ("+09161234567", False),
        ("+79161234567\n", False),
        ("+٧٩١٦١٢٣٤٥٦٧", False),  # Arabic-Indic digits
    ],
)
def test_looks_e164_is_the_written_shape_in_ascii(text: str, shaped: bool) -> None:
    assert looks_e164(text) is shaped


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("+79161234567", "+7 916 123-45-67"),
        ("+442071234567", "+44 20 7123 4567"),
        ("100", "100"),  # a PBX's internal number stays as it came
        ("+1", "+1"),  # E.164-looking, no number at all
        ("anonymous", "anonymous"),
    ],
)
def test_written_shows_a_stored_number_as_people_write_it(stored: str, shown: str) -> None:
    assert written(stored) == shown
