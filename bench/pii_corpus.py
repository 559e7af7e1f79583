"""A generated PII corpus with known spans, and recall and precision per entity type.

    from bench.pii_corpus import evaluate
    scores = evaluate(documents=400, seed=7)   # {"EMAIL_ADDRESS": {"recall": .., "precision": .., ...}, ...}

Documents are Faker-made business prose with entities planted at known offsets — Luhn-valid cards
(Faker), valid IBANs (Faker, several countries, compact or grouped), US SSNs, phone numbers that
python-phonenumbers accepts as valid (Faker draws many impossible area codes; those are not phone
numbers), IPv4 and IPv6, e-mail addresses, Base58Check bitcoin addresses — and distractors that
must not be found: Luhn-invalid 16-digit numbers, order and invoice numbers, dates, times, prices,
versions, ZIP codes, UUIDs.

A detection is a true positive when it has the planted type and overlaps the planted span; any
other detection of a type is a false positive for that type.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS", "CRYPTO")

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass
class Planted:
    entity: str
    start: int
    end: int


@dataclass
class Document:
    text: str
    planted: list[Planted]


def _bitcoin(rng: random.Random) -> str:
    version = rng.choice((b"\x00", b"\x05"))  # P2PKH or P2SH
    payload = version + rng.randbytes(20)
    checksum = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(payload + checksum, "big")
    out = ""
    while number:
        number, r = divmod(number, 58)
        out = _B58[r] + out
    return "1" * (len(payload + checksum) - len((payload + checksum).lstrip(b"\x00"))) + out


def _luhn_invalid(rng: random.Random) -> str:
    digits = [rng.randint(0, 9) for _ in range(15)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    check = (10 - total % 10) % 10
    bad = (check + rng.randint(1, 9)) % 10
    number = "".join(map(str, digits)) + str(bad)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


class _Generator:
    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(["en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES"])
        self.fake.seed_instance(seed)
        self.us = self.fake["en_US"]

    def value(self, entity: str) -> str:
        rng, fake = self.rng, self.fake
        if entity == "EMAIL_ADDRESS":
            return str(rng.choice((self.us.email, self.us.company_email, self.us.free_email))())
        if entity == "PHONE_NUMBER":
            return self._phone()
        if entity == "CREDIT_CARD":
            number = str(self.us.credit_card_number(card_type=rng.choice(("visa16", "mastercard", "amex", "discover"))))
            if rng.random() < 0.5 and len(number) == 16:
                number = " ".join(number[i : i + 4] for i in range(0, 16, 4))
            return number
        if entity == "US_SSN":
            return str(self.us.ssn())
        if entity == "IBAN_CODE":
            iban = str(fake[rng.choice(("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES"))].iban())
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban
        if entity == "IP_ADDRESS":
            return str(self.us.ipv4() if rng.random() < 0.7 else self.us.ipv6())
        if entity == "CRYPTO":
            return _bitcoin(rng)
        raise ValueError(entity)

    def _phone(self) -> str:
        import phonenumbers

        while True:
            locale = self.rng.choice(("en_US", "en_GB", "de_DE", "fr_FR"))
            number = str(self.fake[locale].phone_number())
            region = locale[-2:].replace("GB", "GB")
            try:
                parsed = phonenumbers.parse(number, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed) and "x" not in number.lower():
                return number

    def distractor(self) -> str:
        rng, us = self.rng, self.us
        return str(
            rng.choice(
                (
                    lambda: f"order #{rng.randint(10_000_000, 99_999_999)}",
                    lambda: f"invoice INV-{rng.randint(2019, 2026)}-{rng.randint(1, 99999):05d}",
                    lambda: us.date(),
                    lambda: us.time(),
                    lambda: f"${rng.randint(1, 99_999):,}.{rng.randint(0, 99):02d}",
                    lambda: f"version {rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
                    lambda: f"ZIP {us.postcode()}",
                    lambda: us.uuid4(),
                    lambda: f"card ending {_luhn_invalid(rng)}",
                    lambda: f"{rng.randint(2, 500)} units at {rng.randint(1, 99)}%",
                )
            )()
        )

    def document(self) -> Document:
        rng, us = self.rng, self.us
        parts: list[str] = []
        planted: list[Planted] = []
        position = 0

        def add(text: str, entity: str | None = None) -> None:
            nonlocal position
            if entity is not None:
                planted.append(Planted(entity, position, position + len(text)))
            parts.append(text)
            position += len(text)

        add(us.sentence(nb_words=rng.randint(6, 14)) + " ")
        for _ in range(rng.randint(1, 3)):
            entity = rng.choice(ENTITIES)
            add(rng.choice(("Please reach ", "Details: ", "Use ", "Noted, ", "For the file, ")))
            add(us.name() + " ")
            add(rng.choice(("at ", "via ", "with ", "— ", ": ")))
            add(self.value(entity), entity)
            add(rng.choice((". ", ", thanks. ", " for the refund. ", " (see attached). ")))
            if rng.random() < 0.6:
                add(f"Ref {self.distractor()}. ")
            add(us.sentence(nb_words=rng.randint(5, 12)) + " ")
        return Document("".join(parts), planted)


def corpus(documents: int = 400, seed: int = 7) -> list[Document]:
    generator = _Generator(seed)
    return [generator.document() for _ in range(documents)]


def evaluate(documents: int = 400, seed: int = 7, detector: Any = None) -> dict[str, dict[str, float]]:
    """Recall and precision per entity type (and counts, and analysis time per KB) on a fresh corpus.

    `detector` has `.detect(text)` → detections with entity/start/end; default: the pattern engine
    with the default entities (secrets off)."""
    if detector is None:
        from interlock.config import Guardrails
        from interlock.guardrails.scanner import detector_for

        detector = detector_for(Guardrails(secrets=False))
    docs = corpus(documents, seed)
    for doc in docs[:20]:  # warm up: first use compiles patterns and loads the suffix list
        detector.detect(doc.text)
    counts = {e: {"planted": 0, "found": 0, "detected": 0, "correct": 0} for e in ENTITIES}
    seconds, chars = 0.0, 0
    for doc in docs:
        started = time.perf_counter()
        detections = list(detector.detect(doc.text))
        seconds += time.perf_counter() - started
        chars += len(doc.text)
        for p in doc.planted:
            counts[p.entity]["planted"] += 1
            if any(d.entity == p.entity and d.start < p.end and p.start < d.end for d in detections):
                counts[p.entity]["found"] += 1
        for d in detections:
            if d.entity not in counts:
                continue
            counts[d.entity]["detected"] += 1
            if any(d.entity == p.entity and d.start < p.end and p.start < d.end for p in doc.planted):
                counts[d.entity]["correct"] += 1
    out: dict[str, dict[str, float]] = {}
    for entity, c in counts.items():
        out[entity] = {
            "recall": c["found"] / c["planted"] if c["planted"] else 1.0,
            "precision": c["correct"] / c["detected"] if c["detected"] else 1.0,
            **{k: float(v) for k, v in c.items()},
        }
    out["_all"] = {"documents": float(len(docs)), "ms_per_kb": seconds * 1000 / (chars / 1024)}
    return out


def request_latency(runs: int = 200, seed: int = 3) -> dict[str, float]:
    """Milliseconds the guardrails request hook adds (p50, p90) at concurrency 1, secrets on:

    - `new_2kb`: one new 2 KB user message of prose with one e-mail (never seen before);
    - `turns_20`: a 20-turn conversation whose first 19 turns (2 KB each) were seen on earlier calls.
    """
    import asyncio
    import json
    import statistics

    from faker import Faker

    from interlock.config import Settings
    from interlock.core.call import Call
    from interlock.guardrails.stage import Guardrails
    from interlock.proxy.parse import Parse

    fake = Faker()
    fake.seed_instance(seed)

    def message(i: int) -> str:
        text = ""
        while len(text) < 2000:
            text += fake.paragraph() + " "
        return text[:2000] + f" mail user{i}@acme-corp.io"

    async def measure() -> dict[str, float]:
        actions = {"EMAIL_ADDRESS": "redact", "PHONE_NUMBER": "redact", "CREDIT_CARD": "block", "SECRET": "block"}
        stage = Guardrails(Settings.model_validate({"guardrails": {"request": actions}}))
        await stage.detector()
        messages = [message(i) for i in range(2 * runs + 20)]
        history = [{"role": "user" if i % 2 == 0 else "assistant", "content": messages[i]} for i in range(19)]

        async def hook(i: int, body: list[dict[str, str]]) -> float:
            call = Call(id=str(i), route="openai", protocol="openai", method="POST", path="/chat/completions")
            call.session = "bench"
            call.request_body = json.dumps({"model": "m", "messages": body}).encode()
            await Parse().request(call)
            started = time.perf_counter()
            await stage.request(call)
            elapsed = time.perf_counter() - started
            await stage.seal(call)  # the end of the call: the stage commits the session's vault
            return elapsed * 1000

        await hook(-1, history)  # the earlier turns are seen once
        out: dict[str, float] = {}
        for label, build in (
            ("new_2kb", lambda i: [{"role": "user", "content": messages[20 + i]}]),
            ("turns_20", lambda i: [*history, {"role": "user", "content": messages[20 + runs + i]}]),
        ):
            times = sorted([await hook(i, build(i)) for i in range(runs)])
            out[f"{label}_p50_ms"] = statistics.median(times)
            out[f"{label}_p90_ms"] = times[int(len(times) * 0.9)]
        return out

    return asyncio.run(measure())


if __name__ == "__main__":
    for entity, scores in evaluate().items():
        print(entity, {k: round(v, 3) for k, v in scores.items()})
    print({k: round(v, 3) for k, v in request_latency().items()})
