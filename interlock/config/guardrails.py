"""The guardrails' settings (`guardrails:`): the PII and secrets engines and the default actions,
checked here at the edge against the recognizers interlock knows, without importing them."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from interlock.config.model import Model


class CustomRecognizer(Model):
    """A recognizer of your own: regular expressions and/or a deny-list of exact words."""

    entity: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    patterns: tuple[str, ...] = ()
    deny_list: tuple[str, ...] = ()
    score: float = Field(0.8, ge=0, le=1)

    @model_validator(mode="after")
    def _valid(self) -> CustomRecognizer:

        if not self.patterns and not self.deny_list:
            raise ValueError("a recognizer needs `patterns` or `deny_list`")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return self


GuardrailAction = Literal["block", "redact", "mask", "hash", "log"]


#: The PII entities `guardrails.entities` may name → the presidio predefined recognizer class that
#: finds each (guardrails/pii.py loads them). Here, at the edge, so the config is checked against it
#: without importing the guardrails. The first seven are loaded by default.
BUILTIN_RECOGNIZERS: dict[str, str] = {
    "EMAIL_ADDRESS": "EmailRecognizer",
    "PHONE_NUMBER": "PhoneRecognizer",
    "CREDIT_CARD": "CreditCardRecognizer",
    "US_SSN": "UsSsnRecognizer",
    "IBAN_CODE": "IbanRecognizer",
    "IP_ADDRESS": "IpRecognizer",
    "CRYPTO": "CryptoRecognizer",
    "URL": "UrlRecognizer",
    "MAC_ADDRESS": "MacAddressRecognizer",
    "DATE_TIME": "DateRecognizer",
    "US_PASSPORT": "UsPassportRecognizer",
    "US_DRIVER_LICENSE": "UsLicenseRecognizer",
    "US_BANK_NUMBER": "UsBankRecognizer",
    "US_ITIN": "UsItinRecognizer",
    "UK_NHS": "NhsRecognizer",
    "UK_NINO": "UkNinoRecognizer",
    "MEDICAL_LICENSE": "MedicalLicenseRecognizer",
}


class Guardrails(Model):
    """PII and secrets detection. Actions map an entity type (or `*`, or `SECRET`) to what happens."""

    #: Default actions for requests and responses, used when no policy sets them for a call.
    request: dict[str, GuardrailAction] = {}
    response: dict[str, GuardrailAction] = {}
    #: When the analyzer fails: `deny` the call if an action is `block` (fail closed), or `allow` it.
    on_error: Literal["deny", "allow"] = "deny"
    #: Images, audio and files in a request (interlock has no OCR or speech recognition): `skip` records
    #: a 'guardrails skip' decision naming them and lets the call go on; `deny` refuses the call (503
    #: `guardrails_error`) whenever a request guardrail applies.
    media: Literal["skip", "deny"] = "skip"
    #: Built-in pattern recognizers to load (presidio entity names); see docs/guardrails.md.
    entities: tuple[str, ...] = (
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "US_SSN",
        "IBAN_CODE",
        "IP_ADDRESS",
        "CRYPTO",
    )
    recognizers: tuple[CustomRecognizer, ...] = ()
    #: Detections scoring below this are ignored.
    score_threshold: float = Field(0.4, ge=0, le=1)
    #: An installed spaCy model (package name or directory) for PERSON, LOCATION, ...; never downloaded.
    spacy_model: str | None = None
    language: str = "en"
    #: Secrets (API keys, tokens, private keys, passwords in URLs) as the entity type `SECRET`.
    secrets: bool = True
    secrets_confidence: Literal["low", "medium", "high"] = "medium"
    #: Where kingfisher keeps its compiled rules (default: the OS cache directory).
    secrets_cache_dir: str | None = None
    #: Reversible redaction: sessions remembered, and values remembered per session (oldest go first).
    vault_sessions: int = Field(10000, ge=1)
    vault_values: int = Field(1000, ge=1)
    #: Texts whose analysis is remembered (by content hash), so re-sent history is not analysed again.
    cache_texts: int = Field(50000, ge=0)
    #: Streamed responses: the longest unbroken token or PEM block held back to be scanned whole
    #: (secrets, custom patterns); the agent waits for such a token until it ends or reaches this.
    stream_holdback_chars: int = Field(4096, ge=256)
    #: Key for the `hash` action (HMAC-SHA256); random per process when unset.
    hash_key: str | None = None

    @field_validator("request", "response")
    @classmethod
    def _entity_names(cls, table: dict[str, str]) -> dict[str, str]:

        for entity in table:
            if entity != "*" and not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
                raise ValueError(f"entity {entity!r} must be `*` or an upper-case name like EMAIL_ADDRESS")
        return table

    @field_validator("entities")
    @classmethod
    def _known_entities(cls, entities: tuple[str, ...]) -> tuple[str, ...]:
        for entity in entities:
            if entity not in BUILTIN_RECOGNIZERS:
                raise ValueError(f"unknown entity {entity!r}; built in: {', '.join(sorted(BUILTIN_RECOGNIZERS))}")
        return entities

    @field_validator("spacy_model")
    @classmethod
    def _spacy_model_installed(cls, name: str | None) -> str | None:

        if name is None or Path(name).expanduser().is_dir():
            return name
        if importlib.util.find_spec(name.replace("-", "_")) is None:
            raise ValueError(f"spaCy model {name!r} is neither an installed package nor a directory (never downloaded)")
        return name
