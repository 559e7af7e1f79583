"""`python -m bench.resources`: the memory and CPU the deployment manifests request, measured.

Runs interlock with the configuration and policies a Kubernetes manifest's ConfigMap holds
(`--manifest`: deploy/kubernetes/shared.yaml by default, or sidecar.yaml) in front of the scripted
provider (interlock/scripted/), drives it with wrk, and reads /proc: RSS when ready and idle, RSS
after each load and the peak (VmHWM), and the CPU cores used while loaded. The manifests'
`resources:` come from its output (the figures and how they were rounded: docs/fleet.md).

What differs from a real pod, and why: the store and state are whatever `--store-url`/`--state-url`
name (default: the embedded SQLite store and in-process state, until a PostgreSQL/Redis is given),
the routes point at the scripted provider, no admin token, and the policy's limits are raised so the
load is proxied rather than refused (the same rule is still evaluated on every call).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench import harness, load
from interlock.core.call import OUTCOMES

DEPLOY = harness.ROOT / "deploy" / "kubernetes"

#: A 2 KB request with an e-mail address and a phone number, so every call runs the PII analyzer and
#: the redaction vault, as the fleet configuration's guardrails do for real traffic.
BODY = load.chat_body(2048, text="Please write to jane.doe@example.com or call +1 415 555 0100 about the order.")


def manifest_config(
    manifest: Path, upstream: str, workdir: Path, store_url: str | None, state_url: str | None
) -> dict[str, Any]:
    """The manifest's ConfigMap: `interlock.yaml` made runnable here, every other key a policy file."""
    data = next(d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "ConfigMap")["data"]
    config: dict[str, Any] = yaml.safe_load(data.pop("interlock.yaml"))
    policies = workdir / "policies"
    policies.mkdir()
    for name, text in data.items():
        document = yaml.safe_load(text)
        for rule in document["rules"]:
            if "limits" in rule:
                rule["limits"] = {limit: 10**9 for limit in rule["limits"]}
        (policies / name).write_text(yaml.safe_dump(document))
    config["listen"] = {"host": "127.0.0.1", "port": harness.free_port()}
    config["admin"] = {"host": "127.0.0.1", "port": harness.free_port()}
    kept = {name: value for name, value in config["store"].items() if name not in ("url", "path")}
    config["store"] = {**kept, **({"url": store_url} if store_url else {"path": str(workdir / "interlock.db")})}
    if state_url:
        config["state"] = {**config["state"], "url": state_url, "vault_key": "bench-" + "0" * 26}
    else:
        config.pop("state", None)
    config["routes"] = {
        name: {**route, "upstream": upstream, "api_key": None} for name, route in config["routes"].items()
    }
    config["policies"] = [str(policies)]
    config["default_agent"] = "bench"
    config["log_level"] = "warning"
    return config


def not_ok(proc: harness.Proc) -> dict[str, int]:
    """The recorded calls that were not answered `ok`, by outcome and error code (why wrk saw a non-2xx)."""
    found: dict[str, int] = {}
    for outcome in OUTCOMES:
        if outcome == "ok":
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/api/calls?outcome={outcome}&limit=500") as r:
            for row in json.load(r)["calls"]:
                key = f"{outcome} {row.get('error_code')}"
                found[key] = found.get(key, 0) + 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resources", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=DEPLOY / "shared.yaml", help="a manifest with a ConfigMap")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per wrk run")
    parser.add_argument("--store-url", help="a PostgreSQL URL (default: the SQLite store)")
    parser.add_argument("--state-url", help="a Redis URL (default: in-process state)")
    parser.add_argument(
        "--servers", action="store_true", help="start a throwaway PostgreSQL and Redis (tests/servers.py) and use them"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.servers:
            # The suite's own throwaway servers (Debian's packages, `make servers`), as the pods' would be.
            from tests.servers import PostgresServer, RedisServer

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-servers-")))
            postgres = PostgresServer(root / "postgres")
            stack.callback(postgres.close)
            redis = RedisServer(root / "redis")
            stack.callback(redis.stop)
            args.store_url, args.state_url = postgres.database("bench"), redis.url
        measure(args)


def measure(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {
        "manifest": str(args.manifest),
        "store": "postgresql" if args.store_url else "sqlite",
        "state": "redis" if args.state_url else "in-process",
        "busy_before": round(harness.quiet_cpu(1.0), 2),
    }
    with harness.scripted_upstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        config = manifest_config(args.manifest, f"{upstream.url}/v1", Path(tmp), args.store_url, args.state_url)
        with harness.interlock(config) as proc:
            out["ready_s"] = round(proc.ready_after, 2)
            time.sleep(2.0)  # let start-up work settle before reading the idle figure
            out["idle_rss_mib"] = round(proc.rss(), 1)
            url = f"{proc.url}/openai/chat/completions"
            for connections in (8, 32):
                cpu0, wall0 = proc.cpu(), time.perf_counter()
                result = load.wrk(url, BODY, connections=connections, seconds=args.seconds)
                cores = (proc.cpu() - cpu0) / (time.perf_counter() - wall0)
                out[f"c{connections}"] = {
                    "rps": round(result.rps),
                    "errors": result.errors,
                    "non_2xx": result.non_2xx,
                    "cores": round(cores, 2),
                    "rss_mib": round(proc.rss(), 1),
                }
            out["peak_rss_mib"] = round(proc.peak_rss(), 1)
            out["not_ok"] = not_ok(proc)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
