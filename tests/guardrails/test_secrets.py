"""Secrets: kingfisher's rule set finds realistic keys, tokens, private keys and passwords in URLs."""

from __future__ import annotations

import base64
import random
import string
import zlib

import pytest

from interlock.config import Guardrails
from interlock.guardrails.secrets import SecretScanner

rng = random.Random(11)
ALNUM = string.ascii_letters + string.digits


def pick(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def github_token() -> str:
    body = pick(ALNUM, 30)
    crc, digits = zlib.crc32(body.encode()), ""
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    while crc:
        crc, r = divmod(crc, 62)
        digits = alphabet[r] + digits
    return "ghp_" + body + digits.rjust(6, "0")


def private_key() -> str:
    body = base64.b64encode(rng.randbytes(600)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----"


AWS_ID = "AKIA" + pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
SECRETS = {
    "aws pair": (f"aws_access_key_id = {AWS_ID}\naws_secret_access_key = {pick(ALNUM + '/+', 40)}", AWS_ID),
    "aws key id alone": (f"the key is {AWS_ID}, ok?", AWS_ID),
    "github": (f"push with {(token := github_token())} now", token),
    "openai": (f"OPENAI_API_KEY={(key := 'sk-proj-' + pick(ALNUM, 74) + 'T3BlbkFJ' + pick(ALNUM, 74))}", key),
    "slack": (f"bot {(slack := f'xoxb-{pick(string.digits, 12)}-{pick(string.digits, 13)}-{pick(ALNUM, 24)}')}", slack),
    "private key": (f"my key:\n{(pem := private_key())}\n", pem),
    "password in url": ("connect to postgres://app:Xk29fjQpLm8zRt4W@db.prod.acme-corp.io:5432/app", "Xk29fjQpLm8zRt4W"),
}


@pytest.fixture(scope="module")
def scanner() -> SecretScanner:
    return SecretScanner(Guardrails())


@pytest.mark.parametrize("name", list(SECRETS))
def test_realistic_secrets_are_found(scanner: SecretScanner, name: str) -> None:
    text, secret = SECRETS[name]
    spans = [text[d.start : d.end] for d in scanner.scan(text)]
    assert secret in spans or any(secret in s for s in spans), spans


def test_ordinary_text_has_no_secrets(scanner: SecretScanner) -> None:
    for text in (
        "the commit is 3f786850e387550fdab836ed7e6dc881de23001b",
        "id 123e4567-e89b-12d3-a456-426614174000, see https://docs.acme-corp.io/start?page=2",
        "password reset link sent; your token expires in 10 minutes",
        "image iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    ):
        assert scanner.scan(text) == [], text


def test_offsets_are_characters_after_non_ascii_text(scanner: SecretScanner) -> None:
    text = f"clé secrète — {AWS_ID} ✓"
    (found,) = scanner.scan(text)
    assert text[found.start : found.end] == AWS_ID and found.entity == "SECRET"
