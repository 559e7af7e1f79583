"""Placeholders, masks and hashes; restoring them, streamed, whatever the chunk boundaries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from interlock.guardrails.pii import Detection
from interlock.guardrails.redaction import (
    MAX_HOLD,
    EmbeddedVault,
    Hasher,
    SessionVault,
    StreamScrubber,
    holdback,
    mask,
    resolve_overlaps,
    restorer,
)


def vault_with(*items: tuple[str, str]) -> SessionVault:
    vault = SessionVault(100)
    for entity, value in items:
        vault.placeholder(entity, value)
    return vault


def test_the_same_value_gets_the_same_placeholder() -> None:
    vault = SessionVault(100)
    assert vault.placeholder("EMAIL_ADDRESS", "a@x.io") == "<EMAIL_ADDRESS_1>"
    assert vault.placeholder("EMAIL_ADDRESS", "b@x.io") == "<EMAIL_ADDRESS_2>"
    assert vault.placeholder("PHONE_NUMBER", "212-736-5000") == "<PHONE_NUMBER_1>"
    assert vault.placeholder("EMAIL_ADDRESS", "a@x.io") == "<EMAIL_ADDRESS_1>"
    assert vault.value("<EMAIL_ADDRESS_2>") == "b@x.io"


def test_vaults_are_bounded_and_per_session() -> None:
    vault = SessionVault(2)
    for value in ("a", "b", "c"):
        vault.placeholder("X", value)
    assert len(vault) == 2 and vault.value("<X_1>") is None and vault.value("<X_3>") == "c"
    vaults = EmbeddedVault(sessions=2, values=10)
    first = vaults.get("s1")
    assert first is not None and vaults.get("s1") is first
    vaults.get("s2")
    vaults.get("s3")
    assert vaults.get("s1", create=False) is None
    assert vaults.get("s3", create=False) is not None


def test_mask_keeps_separators_and_the_last_four_of_long_values() -> None:
    assert mask("4539 1488 0343 6467") == "**** **** **** 6467"
    assert mask("212-736-5000") == "***-***-****"
    assert mask("a@b.io") == "*@*.**"


def test_hash_is_keyed_and_stable() -> None:
    hasher = Hasher("k")
    assert hasher("EMAIL_ADDRESS", "a@x.io") == hasher("EMAIL_ADDRESS", "a@x.io")
    assert hasher("EMAIL_ADDRESS", "a@x.io") != Hasher("other")("EMAIL_ADDRESS", "a@x.io")
    assert hasher("EMAIL_ADDRESS", "a@x.io").startswith("<EMAIL_ADDRESS#")


def test_overlaps_keep_the_higher_score_then_the_longer_span() -> None:
    found = resolve_overlaps(
        [Detection("PHONE_NUMBER", 0, 12, 0.4), Detection("CREDIT_CARD", 0, 19, 1.0), Detection("X", 25, 30, 0.5)]
    )
    assert [d.entity for d in found] == ["CREDIT_CARD", "X"]


def test_restoring_escapes_values_inside_json_text() -> None:
    vault = vault_with(("PERSON", 'Jo "JJ" Doe'))
    plain, inside_json = restorer(vault), restorer(vault, json_text=True)
    assert plain is not None and inside_json is not None
    assert plain("hi <PERSON_1>") == 'hi Jo "JJ" Doe'
    assert inside_json('{"to": "<PERSON_1>"}') == '{"to": "Jo \\"JJ\\" Doe"}'
    assert plain("<PERSON_2> stays") == "<PERSON_2> stays"


def feed_all(scrubber: StreamScrubber, pieces: list[str]) -> tuple[str, list[str]]:
    released = [scrubber.feed(p) for p in pieces]
    released.append(scrubber.flush())
    return "".join(released), released


def splits(text: str) -> list[list[str]]:
    """Every way to cut `text` in two, and in three around each placeholder edge, and char by char."""
    out = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    out += [[text[:i], text[i:j], text[j:]] for i in range(0, len(text), 3) for j in range(i, len(text) + 1)]
    out.append(list(text))
    return out


RESTORE_TEXT = "Hi <EMAIL_ADDRESS_1>, <PHONE_NUMBER_12> and <EMAIL_ADDRESS_1>. <HTML> a<b <EMAIL_ADDRESS_9> end <"


def test_placeholders_split_across_every_chunk_boundary_are_restored() -> None:
    vault = vault_with(("EMAIL_ADDRESS", "jane@acme.io"))
    for n in range(1, 13):
        vault.placeholder("PHONE_NUMBER", f"+1 212 736 50{n:02d}")
    restore = restorer(vault)
    assert restore is not None
    expected = restore(RESTORE_TEXT)
    assert "jane@acme.io" in expected and "+1 212 736 5012" in expected and "<EMAIL_ADDRESS_9>" in expected
    for pieces in splits(RESTORE_TEXT):
        joined, _ = feed_all(StreamScrubber(restore, entities=False), pieces)
        assert joined == expected, pieces


def test_only_a_possible_placeholder_is_held_back() -> None:
    vault = vault_with(("EMAIL_ADDRESS", "jane@acme.io"))
    restore = restorer(vault)
    assert restore is not None
    scrubber = StreamScrubber(restore, entities=False)
    assert scrubber.feed("Dear <EMAIL_AD") == "Dear "
    assert scrubber.feed("DRESS_1") == ""
    assert scrubber.feed(">, thanks a") == "jane@acme.io, thanks a"
    assert scrubber.feed(" lot <") == " lot "
    assert scrubber.feed("3") == "<3"  # not a placeholder after all: released at once
    assert scrubber.flush() == ""


def test_entity_tails_are_held_only_while_they_could_grow() -> None:
    assert holdback("call me at 212-736-", entities=True) == len("call me at ")
    assert holdback("card 4539 1488 0343", entities=True) == len("card ")
    assert holdback("mail jane@acme.io and", entities=True) == len("mail jane@acme.io and") - 3
    assert holdback("done. ", entities=True) == len("done. ")
    long = "x" * (MAX_HOLD * 2)
    assert holdback(long, entities=True) == len(long) - MAX_HOLD


ENTITY_TEXT = "Mail jane.roe@acme-corp.io or call 212-736-5000; card 4539 1488 0343 6467 <EMAIL_ADDRESS_1> ok"


@pytest.fixture(scope="module")
def detect() -> Callable[[str], list[Detection]]:
    from interlock.config import Guardrails
    from interlock.guardrails.scanner import detector_for

    detector = detector_for(Guardrails(secrets=False))
    return lambda text: list(detector.detect(text))


def test_entities_split_across_every_chunk_boundary_are_found(detect: Callable[[str], list[Detection]]) -> None:
    from interlock.guardrails.redaction import Applied, replacement, rewrite

    vault = vault_with(("EMAIL_ADDRESS", "me@home.io"))
    restore = restorer(vault)
    hasher = Hasher("k")

    def process(segment: str) -> str:
        applied = [Applied(d, "mask") for d in detect(segment)]
        return rewrite(segment, applied, lambda a, v: replacement(a.detection.entity, v, "mask", None, hasher), restore)

    expected = process(ENTITY_TEXT)
    assert expected == ("Mail ****.***@****-****.** or call ***-***-****; card **** **** **** 6467 me@home.io ok")
    cuts = [[ENTITY_TEXT[:i], ENTITY_TEXT[i:]] for i in range(len(ENTITY_TEXT) + 1)] + [list(ENTITY_TEXT)]
    for pieces in cuts:
        joined, _ = feed_all(StreamScrubber(process, entities=True), pieces)
        assert joined == expected, pieces
