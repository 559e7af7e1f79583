"""PII detection: presidio's recognizers in-process, offline, with custom recognizers and spaCy NER."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from interlock import config
from interlock.config import Guardrails, SourceError, load_settings
from interlock.guardrails import pii
from interlock.guardrails.pii import PiiAnalyzer


def found(analyzer: PiiAnalyzer, text: str) -> list[tuple[str, str]]:
    return sorted((d.entity, text[d.start : d.end]) for d in analyzer.analyze(text))


@pytest.fixture(scope="module")
def analyzer() -> PiiAnalyzer:
    return PiiAnalyzer(Guardrails())


def test_nothing_reaches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(pii, "_TLD", None)  # the suffix list is first used below, with sockets refused
    analyzer = PiiAnalyzer(Guardrails())
    text = "write to jane.roe@acme-corp.io or ops@mail.example.co.uk, not to a@b.invalidtld"
    assert found(analyzer, text) == [
        ("EMAIL_ADDRESS", "jane.roe@acme-corp.io"),
        ("EMAIL_ADDRESS", "ops@mail.example.co.uk"),
    ]
    assert attempts == []


def test_the_default_entities_are_found(analyzer: PiiAnalyzer) -> None:
    text = (
        "Jane (jane.roe@acme-corp.io, +1 415 736 5000) paid with 4539 1488 0343 6467 from "
        "GB82 WEST 1234 5698 7654 32; SSN 536-22-1234; host 10.20.30.40 and "
        "wallet 1BoatSLRHtKNngkdXEeobR76b53LETtpyT."
    )
    assert found(analyzer, text) == [
        ("CREDIT_CARD", "4539 1488 0343 6467"),
        ("CRYPTO", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
        ("EMAIL_ADDRESS", "jane.roe@acme-corp.io"),
        ("IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
        ("IP_ADDRESS", "10.20.30.40"),
        ("PHONE_NUMBER", "+1 415 736 5000"),
        ("US_SSN", "536-22-1234"),
    ]


def test_lookalikes_are_not_found(analyzer: PiiAnalyzer) -> None:
    text = (
        "Order 4539 1488 0343 6468 failed (bad checksum) on 2024-01-15 at 10:30; version 1.2.3; "
        "call it ACME-1234-5678; see page 212 of 736."
    )
    assert found(analyzer, text) == []


def test_custom_recognizers_from_config() -> None:
    analyzer = PiiAnalyzer(
        Guardrails(
            entities=("EMAIL_ADDRESS",),
            recognizers=(
                config.CustomRecognizer(entity="EMPLOYEE_ID", patterns=(r"\bEMP-\d{6}\b",)),
                config.CustomRecognizer(entity="PROJECT", deny_list=("Bluebird", "Nightjar")),
            ),
        )
    )
    text = "EMP-004211 works on Nightjar, mail x@acme-corp.io"
    assert found(analyzer, text) == [
        ("EMAIL_ADDRESS", "x@acme-corp.io"),
        ("EMPLOYEE_ID", "EMP-004211"),
        ("PROJECT", "Nightjar"),
    ]
    assert "EMPLOYEE_ID" in analyzer.entities and "PHONE_NUMBER" not in analyzer.entities


def test_more_builtin_entities_by_name() -> None:
    analyzer = PiiAnalyzer(Guardrails(entities=("MAC_ADDRESS", "URL")))
    assert found(analyzer, "nic 00:1A:2B:3C:4D:5E at https://intranet.acme-corp.io/x") == [
        ("MAC_ADDRESS", "00:1A:2B:3C:4D:5E"),
        ("URL", "https://intranet.acme-corp.io/x"),
    ]
    with pytest.raises(ValueError, match="unknown entity 'NOPE'"):
        PiiAnalyzer(Guardrails(entities=("NOPE",)))


def test_an_installed_spacy_model_adds_person_and_location(tmp_path: Path) -> None:
    import spacy

    nlp = spacy.blank("en")  # a model directory without downloads: an entity ruler stands in for NER
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(  # type: ignore[attr-defined]
        [
            {"label": "PERSON", "pattern": [{"LOWER": "ada"}, {"LOWER": "lovelace"}]},
            {"label": "GPE", "pattern": "London"},
        ]
    )
    nlp.to_disk(tmp_path / "model")
    analyzer = PiiAnalyzer(Guardrails(spacy_model=str(tmp_path / "model")))
    assert found(analyzer, "Ada Lovelace lives in London, mail ada@acme-corp.io") == [
        ("EMAIL_ADDRESS", "ada@acme-corp.io"),
        ("LOCATION", "London"),
        ("PERSON", "Ada Lovelace"),
    ]


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "interlock.yaml"
    path.write_text("guardrails:\n  spacy_model: en_core_web_nope\n")
    with pytest.raises(SourceError, match=r"interlock.yaml:2:.*never downloaded"):
        load_settings(path)
    path.write_text("guardrails:\n  request:\n    EMAIL_ADDRESS: shred\n")
    with pytest.raises(SourceError, match=r"interlock.yaml:3:"):
        load_settings(path)
    path.write_text("guardrails:\n  entities: [EMAIL_ADDRESS, SHOE_SIZE]\n")
    with pytest.raises(SourceError, match=r"interlock.yaml:2:.*unknown entity 'SHOE_SIZE'"):
        load_settings(path)
    path.write_text("guardrails:\n  recognizers:\n    - entity: ID\n      patterns: ['(']\n")
    with pytest.raises(SourceError, match=r"interlock.yaml:3:.*not a valid regular expression"):
        load_settings(path)
