"""Policy (issue 5): evaluating 200 rules per call (engine called directly), and a 10,000-call what-if."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import yaml

from bench import harness, load
from bench.context import Context
from bench.report import Section

RULES = 200
WHATIF_CALLS = 10_000


def available() -> str | None:
    try:
        from interlock.policies import engine, loader, whatif  # noqa: F401
    except ImportError:
        return "the policy engine (interlock.policies.engine) is not in this commit yet"
    return None


def _rule(kind: int, name: str, match: dict[str, object], i: int) -> dict[str, object]:
    rule: dict[str, object] = {"name": name}
    if match:
        rule["match"] = match
    if kind == 0:  # model allow-lists (intersect)
        rule["allow"] = {"models": ["gpt-4o-*", "gpt-4.1-*", f"m{i}"]}
    elif kind == 1:  # tool deny-lists
        rule["deny"] = {"tools": [f"tool_{i}_*", f"exec_{i}"]}
    elif kind == 2:  # a CEL condition: compiled once, evaluated per call
        rule["when"] = f"request.input_chars > {50_000 + i} && !agent.startsWith('research')"
        rule["deny"] = {}
        rule["message"] = "prompt too large"
    elif kind == 3:  # monitor-mode model denial
        rule["deny"] = {"models": [f"model-{i}-*"]}
        rule["mode"] = "monitor"
    else:  # parameter clamp
        rule["set"] = {"max_tokens": 4096 + i}
    return rule


def policy_document(mix: str, count: int = RULES) -> dict[str, object]:
    """`count` rules. `indexed`: 20 teams of 9 rules matched by agent, plus 20 global rules, so the
    index leaves 29 candidates for a call. `flat`: every rule applies to the call's route and agent
    (a worst case the index cannot help with)."""
    rules: list[dict[str, object]] = []
    if mix == "indexed":
        teams, per_team = 20, 9
        for team in range(teams):
            for j in range(per_team):
                i = team * per_team + j
                rules.append(_rule(j % 5, f"team{team}-r{j}", {"agent": f"team{team}-*", "route": "openai"}, i))
        for j in range(count - teams * per_team):
            rules.append(_rule(j % 5, f"global-r{j}", {}, 1000 + j))
    else:
        for i in range(count):
            rules.append(_rule(i % 5, f"r{i:03d}", {"agent": ["team3-*", "x-*"], "route": "openai"}, i))
    return {"version": 1, "rules": rules}


def chat_request() -> bytes:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the weather in Paris? " * 20},
            ],
            "tools": [
                {"type": "function", "function": {"name": f"get_{n}", "parameters": {"type": "object"}}}
                for n in ("weather", "time", "news")
            ],
            "temperature": 0.7,
        }
    ).encode()


def run(ctx: Context) -> Section:
    section = Section("Policy: evaluation with 200 rules, what-if over 10,000 calls", issue=5)
    if reason := available():
        section.skipped = reason
        return section
    from interlock.core.call import Call
    from interlock.policies.loader import load_policies
    from interlock.policies.subject import Subject
    from interlock.protocols import ADAPTERS

    folders: dict[str, Path] = {}
    for mix in ("indexed", "flat"):
        folder = folders[mix] = ctx.workdir / f"policies-{mix}"
        folder.mkdir(exist_ok=True)
        (folder / "bench.yaml").write_text(yaml.safe_dump(policy_document(mix), sort_keys=False))
        engine = load_policies([folder], {"openai": "openai"})
        assert len(engine.rules) == RULES, len(engine.rules)
        call = Call(id="bench", route="openai", protocol="openai", method="POST", path="/chat/completions")
        call.agent = "team3-support"
        call.request_body = chat_request()
        call.view = ADAPTERS["openai"].parse(call)
        call.model = call.view.model
        host = "127.0.0.1"
        evaluation = engine.evaluate(Subject.from_call(call, host))
        candidates = len(engine.candidates("openai", call.agent))
        samples: list[float] = []
        clock = time.perf_counter_ns
        for _ in range(20_000):
            began = clock()
            engine.evaluate(Subject.from_call(call, host))
            samples.append((clock() - began) / 1000.0)
        p50 = load.percentile(samples, 50)
        measured = (
            f"{p50:.1f} µs (p99 {load.percentile(samples, 99):.1f} µs; {candidates} candidates after the "
            f"route/agent index, {len(evaluation.fired)} fire)"
        )
        if mix == "indexed":
            section.add(
                "Evaluate 200 rules per call, indexed mix (Subject.from_call + Engine.evaluate), p50",
                "≤ 50 µs",
                measured,
                p50 <= 50,
                "" if p50 <= 50 else "per-candidate checks and CEL evaluation; see the rule mix in bench/policy.py",
            )
        else:
            section.add("Same, flat mix: all 200 rules apply to the call (worst case), p50", "—", measured)

    ctx.log(f"what-if: writing {WHATIF_CALLS:,} recorded calls")
    store_path = ctx.workdir / "whatif.db"
    write_store(store_path, WHATIF_CALLS)
    began = time.perf_counter()
    out = subprocess.run(
        [
            harness.PYTHON,
            "-m",
            "interlock.cli",
            "policy",
            "whatif",
            "--policy",
            str(folders["indexed"]),
            "--store",
            str(store_path),
            "--since",
            "0",
            "--json",
        ],
        cwd=ctx.workdir,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - began
    summary = {}
    for line in out.stdout.splitlines():
        data = json.loads(line)
        if data.get("type") == "summary":
            summary = data
    evaluated = summary.get("evaluated", 0)
    section.add(
        f"`interlock policy whatif` over {WHATIF_CALLS:,} recorded calls, 200 rules (whole command)",
        "< 5 s",
        f"{wall:.2f} s ({evaluated:,} evaluated, {summary.get('changed', '?')} would change; "
        f"evaluation itself {summary.get('seconds', '?')} s)"
        + ("" if out.returncode == 0 else f"; exit {out.returncode}: {out.stderr.strip()[-200:]}"),
        wall < 5 and evaluated == WHATIF_CALLS,
        "" if wall < 5 else "reading and re-parsing each recorded request; see the evaluation time",
    )
    section.note(
        "Rules (bench/policy.py) cycle through five kinds: model allow-list, tool deny-list, CEL condition, "
        "monitor-mode model denial, parameter clamp. Indexed mix: 20 teams × 9 rules matched by agent glob "
        "plus 20 global rules. The call: agent team3-support, a chat request with a system and a user "
        "message and three tools. The what-if runs the indexed mix over calls from 20 teams' agents."
    )
    section.note("What-if store: written with Store.write from Call records (the recorder's own path).")
    return section


def write_store(path: Path, count: int) -> None:
    from interlock.core.call import Call
    from interlock.tracing.backend import open_store

    store = open_store(path)
    body = chat_request()
    response = (
        b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"Sunny."},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}'
    )
    now = time.time()
    batch = []
    for i in range(count):
        call = Call(
            id=f"{int((now - count + i) * 1e6):013x}{i:013x}",
            route="openai",
            protocol="openai",
            method="POST",
            path="/chat/completions",
            started_at=now - count + i,
        )
        call.agent = f"team{i % 20}-agent"
        call.model = "gpt-4o-mini" if i % 3 else "gpt-4.1-preview"
        call.request_body = body
        call.request_headers = [("content-type", "application/json")]
        call.status = 200
        call.response_headers = [("content-type", "application/json")]
        call.response_body = response
        call.duration_ms = 5.0
        batch.append(call.to_record())
        if len(batch) == 1000:
            store.write(batch)
            batch = []
    store.write(batch)
    store.close()
