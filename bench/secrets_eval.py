"""kingfisher-secret-scanner vs detect-secrets on realistic keys: recall, false positives, speed.

    python -m bench.secrets_eval

Keys are generated in their real formats (GitHub tokens with their CRC32 checksum, OpenAI project
keys, AWS key pairs, Slack bot tokens and webhooks, Stripe, Anthropic, RSA private keys, passwords
in database URLs), each in a short sentence as an agent would send it. Negatives are text that
looks key-like (commit SHAs, UUIDs, base64 images, URLs). Speed: one 2 KB message of prose.
"""

from __future__ import annotations

import base64
import random
import statistics
import string
import time
import zlib
from collections.abc import Callable
from typing import Any

ALNUM = string.ascii_letters + string.digits
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _pick(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _github(rng: random.Random) -> str:
    body = _pick(rng, ALNUM, 30)
    crc, out = zlib.crc32(body.encode()), ""
    while crc:
        crc, r = divmod(crc, 62)
        out = B62[r] + out
    return "ghp_" + body + out.rjust(6, "0")


def _pem(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(600)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{lines}\n-----END RSA PRIVATE KEY-----"


def _aws_id(rng: random.Random) -> str:
    return "AKIA" + _pick(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)


CASES: dict[str, Callable[[random.Random], str]] = {
    "aws key pair": lambda r: f"aws_access_key_id = {_aws_id(r)}\naws_secret_access_key = {_pick(r, ALNUM + '/+', 40)}",
    "aws key id alone": lambda r: f"the key is {_aws_id(r)} ok?",
    "github classic": lambda r: f"use token {_github(r)} to push",
    "github fine-grained": lambda r: f"token github_pat_{_pick(r, ALNUM, 22)}_{_pick(r, ALNUM, 59)}",
    "openai project": lambda r: f"OPENAI_API_KEY=sk-proj-{_pick(r, ALNUM, 74)}T3BlbkFJ{_pick(r, ALNUM, 74)}",
    "openai in prose": lambda r: f"here: sk-proj-{_pick(r, ALNUM, 74)}T3BlbkFJ{_pick(r, ALNUM, 74)} thanks",
    "slack bot": lambda r: (
        f"slack bot xoxb-{_pick(r, string.digits, 12)}-{_pick(r, string.digits, 13)}-{_pick(r, ALNUM, 24)}"
    ),
    "slack webhook": lambda r: (
        "post to https://hooks.slack.com/services/T"
        + f"{_pick(r, string.ascii_uppercase + string.digits, 8)}/B{_pick(r, string.ascii_uppercase + string.digits, 10)}/"
        + _pick(r, ALNUM, 24)
    ),
    "stripe": lambda r: f"stripe key sk_live_{_pick(r, ALNUM, 24)}",
    "anthropic": lambda r: f"key sk-ant-api03-{_pick(r, ALNUM + '_-', 93)}AA",
    "private key": lambda r: "here is my key\n" + _pem(r),
    "password in url": lambda r: (
        f"connect with postgres://app_user:{_pick(r, ALNUM, 16)}@db.prod.acme-corp.io:5432/app"
    ),
}

NEGATIVES = [
    "the commit sha is 3f786850e387550fdab836ed7e6dc881de23001b",
    "uuid 123e4567-e89b-12d3-a456-426614174000 is the id",
    "please summarise this paragraph about the economy of France in 1990",
    "password reset link sent to your inbox",
    "https://docs.acme-corp.io/getting-started?page=2&sort=asc",
    "image iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
]


def evaluate(scanners: dict[str, Callable[[str], list[Any]]], per_case: int = 5, seed: int = 7) -> dict[str, Any]:
    from faker import Faker

    rng = random.Random(seed)
    samples = [(name, make(rng)) for name, make in CASES.items() for _ in range(per_case)]
    fake = Faker()
    fake.seed_instance(seed)
    prose = ""
    while len(prose) < 2048:
        prose += fake.paragraph() + " "
    prose = prose[:2048]
    results: dict[str, Any] = {}
    for label, scan in scanners.items():
        missed = sorted({name for name, text in samples if not scan(text)})
        found = sum(1 for _, text in samples if scan(text))
        false = sum(1 for text in NEGATIVES if scan(text))
        for _ in range(5):
            scan(prose)
        times = []
        for _ in range(50):
            started = time.perf_counter()
            scan(prose)
            times.append(time.perf_counter() - started)
        results[label] = {
            "recall": f"{found}/{len(samples)}",
            "missed": missed,
            "false_positives": f"{false}/{len(NEGATIVES)}",
            "ms_per_2kb_p50": round(statistics.median(times) * 1000, 3),
        }
    return results


def main() -> None:
    import kingfisher_sdk
    from detect_secrets.core.scan import _process_line_based_plugins
    from detect_secrets.settings import default_settings

    from interlock.config import Guardrails
    from interlock.guardrails.secrets import SecretScanner

    started = time.perf_counter()
    rules = kingfisher_sdk.Rules()
    raw = kingfisher_sdk.Scanner(rules, base64=False)
    print(f"kingfisher: {len(rules)} rules, loaded in {time.perf_counter() - started:.2f} s ({rules.cache_status})")
    ours = SecretScanner(Guardrails())

    def detect_secrets(text: str) -> list[Any]:
        lines = list(enumerate(text.splitlines(), start=1))
        return list(_process_line_based_plugins(lines, filename="message.txt"))

    with default_settings():
        results = evaluate(
            {
                "kingfisher (raw)": lambda t: [f for f in raw.scan(t) if f.visible],
                "interlock (kingfisher + supplement)": ours.scan,
                "detect-secrets 1.5 (default plugins)": detect_secrets,
            }
        )
    for label, row in results.items():
        print(label, row)


if __name__ == "__main__":
    main()
