"""The CLI: export, import, replay (bad input exits 2), replay with a command, replay run."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from replay_helpers import SESSION, Incident

from interlock.cli import main
from interlock.scripted import Script, ScriptedUpstream, ToolUse
from interlock.tracing.store import Store

HERE = Path(__file__).parent


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_export_writes_one_session_and_import_merges_it(incident: Incident, tmp_path: Path) -> None:
    out = tmp_path / "again.db"
    code, stdout, _ = invoke("export", "--store", str(incident.store), "--session", SESSION, "-o", str(out))
    assert code == 0 and stdout.strip() == f"exported 5 calls to {out}"
    with Store(out, readonly=True) as bundle:
        assert [c.session for c in bundle.iter_calls()] == [SESSION] * 5
    target = tmp_path / "laptop.db"
    assert invoke("import", str(out), "--store", str(target))[1].strip() == f"imported 5 new calls into {target}"
    assert invoke("import", str(out), "--store", str(target))[1].strip() == f"imported 0 new calls into {target}"


def test_export_of_nothing_is_an_error(incident: Incident, tmp_path: Path) -> None:
    out = tmp_path / "none.db"
    code, _, stderr = invoke("export", "--store", str(incident.store), "--session", "nope", "-o", str(out))
    assert code == 2 and "no calls match" in stderr
    assert not out.exists()


def _newer(incident: Incident, tmp_path: Path) -> Path:
    path = tmp_path / "newer.db"
    path.write_bytes(incident.bundle.read_bytes())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    return path


def _empty(incident: Incident, tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    Store(path).close()
    return path


def _plain_sqlite(incident: Incident, tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    return path


def _text(incident: Incident, tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 10)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text, "not an interlock bundle (not a SQLite database)"),
        (_plain_sqlite, "not an interlock bundle (a SQLite database without interlock's tables)"),
        (_newer, "written by a newer interlock (schema version 99"),
        (_empty, "the bundle holds no calls"),
        (lambda incident, tmp_path: tmp_path / "missing.db", "no such file"),
    ],
)
@pytest.mark.parametrize(
    "command", [("replay",), ("replay", "run", "--route", "openai", "--upstream", "http://x"), ("import",)]
)
def test_bad_bundles_exit_2_with_a_clear_error(
    incident: Incident, tmp_path: Path, make: object, message: str, command: tuple[str, ...]
) -> None:
    path = make(incident, tmp_path)  # type: ignore[operator]
    args = (
        [*command[:1], *command[1:2], str(path), *command[2:]]
        if command[:2] == ("replay", "run")
        else [*command, str(path)]
    )
    if command == ("import",):
        args += ["--store", str(tmp_path / "target.db")]
    code, stdout, stderr = invoke(*args)
    assert code == 2
    assert message in stderr and stderr.startswith("Error: ")
    assert stdout == ""


AGENT = """
import os, sys
sys.path.insert(0, {here!r})
from replay_helpers import weather_agent
base = os.environ["OPENAI_BASE_URL"]
print(weather_agent({question!r}, base_url=base, tools_url=base.rsplit("/", 1)[0] + "/tools"))
"""


@pytest.mark.parametrize(
    ("question", "code", "expected"),
    [
        ("Weather in Paris and Lyon?", 0, "Paris: sunny. Lyon: rainy."),
        ("Weather in Rome?", 1, "diverges from the recording"),
    ],
)
def test_replay_runs_a_command_against_the_recording(
    incident: Incident, tmp_path: Path, question: str, code: int, expected: str, capfd: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT.format(here=str(HERE), question=question))
    summary = tmp_path / "summary.json"
    exit_code, stdout, stderr = invoke(
        "replay", str(incident.bundle), "--port", "0", "--speed", "max", "--summary", str(summary),
        "--", sys.executable, str(script),
    )  # fmt: skip
    assert exit_code == code, stderr
    data = json.loads(summary.read_text())
    if code == 0:
        assert data["served"] == 5 and data["misses"] == [] and data["unused"] == []
        assert "5 of 5 recorded calls served from the recording, 0 misses, 0 recorded calls unused" in stdout
    else:
        assert data["diverged"] and data["misses"][0]["closest_step"] == 1
        assert (
            "messages[1] (user) [messages[1].content]: recorded 'Weather in Paris and Lyon?' → now 'Weather in Rome?'"
            in stdout
        )
    assert expected in stdout + stderr + capfd.readouterr().out  # the agent's own output


def test_replay_run_compares_against_another_model(incident: Incident, tmp_path: Path) -> None:
    with ScriptedUpstream() as other:
        other.script(
            Script(tool_calls=[ToolUse("get_weather", {"city": "Paris"}, id="x1")], input_tokens=20, output_tokens=9),
            Script(text="Paris is sunny, Lyon rainy.", input_tokens=30, output_tokens=12),
            Script(text="Paris: sunny. Lyon: rainy. Take an umbrella to Lyon."),
        )
        prefix = tmp_path / "report"
        code, stdout, stderr = invoke(
            "replay", "run", str(incident.bundle), "--route", "openai", "--upstream", other.url + "/v1",
            "--model", "gpt-next", "--concurrency", "1", "-o", str(prefix),
        )  # fmt: skip
        sent = [r.json() for r in other.requests]
    assert code == 0, stderr
    assert [r["model"] for r in sent] == ["gpt-next"] * 3
    report = json.loads(prefix.with_suffix(".json").read_text())
    totals = report["totals"]
    assert (totals["calls"], totals["same_text"], totals["same_tool_calls"], totals["same_finish_reasons"]) == (
        3,
        2,
        2,
        2,
    )
    first, second, third = report["calls"]
    assert first["same_tool_calls"] and first["rerun"]["input_tokens"] == 20
    assert second["recorded"]["tool_calls"] == ['get_weather({"city": "Lyon"})'] and second["rerun"]["tool_calls"] == []
    assert (second["recorded"]["finish_reasons"], second["rerun"]["finish_reasons"]) == (["tool_calls"], ["stop"])
    assert second["text_diff"][-1] == "+Paris is sunny, Lyon rainy."
    assert third["same_text"]
    markdown = prefix.with_suffix(".md").read_text()
    assert markdown == stdout.rstrip("\n") + "\n" or markdown in stdout
    assert "## Step 2: POST /chat/completions (gpt-next) — differs" in markdown
    assert '- tool calls: `get_weather({"city": "Lyon"})` → none' in markdown
    assert "| same text | | 2 of 3 |" in markdown


def test_on_miss_live_refuses_a_config_whose_store_is_the_bundle(incident: Incident, tmp_path: Path) -> None:
    config = tmp_path / "interlock.yaml"
    config.write_text(
        "routes:\n  openai: {protocol: openai, upstream: 'http://127.0.0.1:9/v1'}\n"
        f"store: {{path: '{incident.bundle}'}}\n"
    )
    before = incident.bundle.read_bytes()
    code, _, stderr = invoke("replay", str(incident.bundle), "--port", "0", "--on-miss", "live", "-c", str(config))
    assert code == 2 and "a replay never writes to its bundle" in stderr
    assert incident.bundle.read_bytes() == before


def test_a_bad_config_for_live_is_a_file_line_error(incident: Incident, tmp_path: Path) -> None:
    config = tmp_path / "interlock.yaml"
    config.write_text("routes:\n  openai: {protocol: nope, upstream: 'http://x'}\n")
    code, _, stderr = invoke("replay", str(incident.bundle), "--on-miss", "live", "-c", str(config))
    assert code == 2 and stderr.startswith(f"Error: {config}:2:")


@pytest.mark.parametrize(("flags", "code"), [((), 1), (("--allow-unused",), 0)])
def test_an_agent_that_stops_early_left_the_recording(incident: Incident, flags: tuple[str, ...], code: int) -> None:
    exit_code, stdout, _ = invoke(
        "replay", str(incident.bundle), "--port", "0", *flags, "--", sys.executable, "-c", "pass"
    )
    assert exit_code == code
    assert "0 of 5 recorded calls served from the recording, 0 misses, 5 recorded calls unused" in stdout


HOST_PROBE = """
import http.client, json, os, sys
from urllib.parse import urlsplit
url = urlsplit(os.environ["OPENAI_BASE_URL"])
seen = {{}}
for name in {names!r}:
    connection = http.client.HTTPConnection("127.0.0.1", url.port, timeout=30)
    connection.request(
        "POST", url.path + "/chat/completions", body=b'{{"model": "probe", "messages": []}}',
        headers={{"Host": name + ":" + str(url.port), "Content-Type": "application/json"}},
    )
    response = connection.getresponse()
    seen[name] = [response.status, json.loads(response.read())["error"]["code"]]
    connection.close()
with open({out!r}, "w") as handle:
    json.dump(seen, handle)
"""


def test_replay_serve_answers_the_host_names_it_is_given(incident: Incident, tmp_path: Path) -> None:
    # A replay bound to every interface, reached by DNS names (a compose service, a cluster domain):
    # the names from --allow-host and from --config's listen.allowed_hosts pass the Host check (the
    # probe's request then misses the recording: 409), any other is refused as by `interlock serve`.
    config = tmp_path / "interlock.yaml"
    config.write_text("listen:\n  allowed_hosts: [.corp.example]\n")
    out = tmp_path / "statuses.json"
    names = ["agent.internal", "api.corp.example", "elsewhere.example"]
    script = tmp_path / "probe.py"
    script.write_text(HOST_PROBE.format(names=names, out=str(out)))
    code, _, stderr = invoke(
        "replay", str(incident.bundle), "--host", "0.0.0.0", "--port", "0", "--speed", "max",
        "--allow-host", "agent.internal", "-c", str(config), "--", sys.executable, str(script),
    )  # fmt: skip
    assert code == 1, stderr  # the probes left the recording
    assert json.loads(out.read_text()) == {
        "agent.internal": [409, "replay_divergence"],
        "api.corp.example": [409, "replay_divergence"],
        "elsewhere.example": [403, "host_refused"],
    }
    assert "--allow-host" not in stderr  # no warning: names were given


def test_replay_serve_on_every_interface_without_names_warns_and_refuses_them(
    incident: Incident, tmp_path: Path
) -> None:
    out = tmp_path / "statuses.json"
    script = tmp_path / "probe.py"
    script.write_text(HOST_PROBE.format(names=["agent.internal", "127.0.0.1"], out=str(out)))
    code, _, stderr = invoke(
        "replay", str(incident.bundle), "--host", "0.0.0.0", "--port", "0", "--speed", "max",
        "--", sys.executable, str(script),
    )  # fmt: skip
    assert code == 1, stderr
    assert json.loads(out.read_text()) == {
        "agent.internal": [403, "host_refused"],
        "127.0.0.1": [409, "replay_divergence"],
    }
    assert "name the others with --allow-host" in stderr
