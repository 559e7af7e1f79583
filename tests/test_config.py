"""interlock.yaml: validated settings, ${ENV} expansion, and errors that name file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from interlock.config import SourceError, load_settings, settings_to_yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "interlock.yaml"
    path.write_text(text)
    return path


def test_the_embedded_default() -> None:
    settings = load_settings()
    assert (settings.listen.host, settings.listen.port) == ("127.0.0.1", 4141)
    assert (settings.admin.host, settings.admin.port) == ("127.0.0.1", 4142)
    assert settings.store.path == "./interlock.db"
    assert settings.routes["openai"].upstreams[0].url == "https://api.openai.com/v1"
    assert settings.routes["anthropic"].protocol == "anthropic"
    assert settings.routes["local"].upstreams[0].url == "http://127.0.0.1:11434/v1"


def test_environment_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_HOST", "models.internal")
    monkeypatch.setenv("MY_KEY", "sk-from-env")
    path = write(
        tmp_path,
        """
routes:
  main:
    upstream: https://${UPSTREAM_HOST}/v1
    api_key: ${MY_KEY}
    protocol: ${PROTO:-anthropic}
""",
    )
    route = load_settings(path).routes["main"]
    assert route.upstreams[0].url == "https://models.internal/v1"
    assert route.upstreams[0].api_key == "sk-from-env"
    assert route.protocol == "anthropic"


@pytest.mark.parametrize(
    ("text", "line", "col", "message"),
    [
        ("listen:\n  port: 4141\n  hots: x\n", 3, 3, "unknown field"),
        ("listen:\n  port: many\n", 2, 3, "valid integer"),
        ("routes:\n  a:\n    protocol: grpc\n    upstream: http://x\n", 3, 5, "openai"),
        ("routes:\n  a:\n    upstream: ftp://x\n", 3, 5, "http://"),
        ("routes:\n  a:\n    protocol: openai\n", 2, 3, "needs `upstream`"),
        ("store: {path: a\n", 2, 1, "invalid YAML"),
        ("listen: {port: 1}\nlisten: {port: 2}\n", 2, 1, "duplicate key"),
        ("- just\n- a list\n", 1, 1, "must be a mapping"),
        ("routes:\n  a:\n    upstream: http://x/${NOT_SET_ANYWHERE}\n", 3, 5, "NOT_SET_ANYWHERE is not set"),
        ("routes:\n  a:\n    upstream: http://${NOPE\n", 3, 5, "malformed environment reference '${NOPE'"),
        ("routes:\n  a:\n    api_key: ${1BAD}\n    upstream: http://x\n", 3, 5, "malformed environment"),
        ("routes:\n  a:\n    upstream: http://\n", 3, 5, "needs a host"),
        ("routes:\n  a:\n    upstreams:\n      - url: https://\n", 4, 9, "needs a host"),
        ("routes:\n  a:\n    upstream: http://[::1\n", 3, 5, "not a valid URL"),
        ("log_level: info\nroutes:\n  ok: {upstream: http://x}\n  a/b:\n    upstream: http://x\n", 4, 3, "'a/b'"),
        ("guardrails:\n  request: {EMAIL_ADDRESS: redact}\n  media: refuse\n", 3, 3, "guardrails.media"),
    ],
)
def test_errors_name_file_line_and_column(tmp_path: Path, text: str, line: int, col: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SourceError) as caught:
        load_settings(path)
    error = caught.value
    assert (error.file, error.line, error.col) == (str(path), line, col), str(error)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}:{col}: ")


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")


def test_effective_config_masks_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "admin: {token: admin-secret}\n"
        "routes:\n"
        "  a: {upstream: 'http://x', api_key: sk-secret}\n"
        "  b: {upstreams: [{url: 'http://y', headers: {x-auth: header-secret}}]}\n"
        "virtual_keys: {vk-virtual-secret: {agent: bot}}\n"
        "otel: {headers: {authorization: otel-secret}}\n"
        "escalation: {webhook: 'http://hook', headers: {authorization: hook-secret}}\n"
        "guardrails: {hash_key: hash-secret}\n",
    )
    text = settings_to_yaml(load_settings(path))
    for secret in ("sk-secret", "admin-secret", "header-secret", "vk-virtual-secret", "otel-secret", "hook-secret",
                   "hash-secret"):  # fmt: skip
        assert secret not in text, secret
    assert "url: http://x" in text and "agent: bot" in text and "x-auth: '***'" in text


def test_the_docker_images_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERLOCK_ADMIN_TOKEN", raising=False)
    settings = load_settings(Path(__file__).parent.parent / "docker" / "interlock.yaml")
    assert settings.listen.host == "0.0.0.0" and settings.store.path == "/data/interlock.db"
    assert settings.admin.token is None  # an empty ${VAR:-} means "not set"


def readme_config(tmp_path: Path) -> Path:
    """The README's configuration example, as a newcomer would copy it."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    text = readme.split("```yaml\nlisten:", 1)[1].split("```", 1)[0]
    return write(tmp_path, "listen:" + text)


def test_a_policy_folder_that_does_not_exist_is_an_error_at_the_config_files_line(tmp_path: Path) -> None:
    # The README's example names ./policies; without that folder `serve` refused it, `config check` did
    # not, and the error named `policies:1:1` instead of the line in interlock.yaml that names it.
    path = readme_config(tmp_path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("policies:"))
    with pytest.raises(SourceError) as caught:
        load_settings(path)
    error = caught.value
    assert (error.file, error.line) == (str(path), line), str(error)
    assert "./policies" in error.message and str(tmp_path / "policies") in error.message
    (tmp_path / "policies").mkdir()  # relative to the configuration file, as the policy loader reads it
    assert list(load_settings(path).policies) == ["./policies"]


def test_config_check_refuses_what_serve_refuses(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from interlock.cli import main

    path = readme_config(tmp_path)
    missing = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert missing.exit_code == 2 and missing.stderr.startswith(f"Error: {path}:"), missing.output
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "bad.yaml").write_text("rules:\n  - name: x\n    deny: {modelz: [a]}\n")
    broken = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert broken.exit_code == 2 and f"{tmp_path / 'policies' / 'bad.yaml'}:3:" in broken.stderr, broken.output
    as_json = CliRunner().invoke(main, ["config", "check", "--json", "--config", str(path)])
    assert as_json.exit_code == 2 and '"ok": false' in as_json.stdout
    (tmp_path / "policies" / "bad.yaml").write_text("rules:\n  - name: x\n    deny: {models: [a]}\n")
    assert CliRunner().invoke(main, ["config", "check", "--config", str(path)]).exit_code == 0
    junk = tmp_path / "interlock.db"
    junk.write_text("not a database")
    text = path.read_text().replace("path: ./interlock.db", f"path: {junk}")
    store_line = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("store:"))
    path.write_text(text)
    not_a_store = CliRunner().invoke(main, ["config", "check", "--config", str(path)])
    assert not_a_store.exit_code == 2 and not_a_store.stderr.startswith(f"Error: {path}:{store_line}:"), (
        not_a_store.output
    )


def test_store_takes_a_path_or_a_url_not_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTERLOCK_STORE_URL", raising=False)
    path = tmp_path / "interlock.yaml"
    path.write_text("default_agent: a\nstore:\n  path: ./x.db\n  url: postgresql://u@db/x\n")
    with pytest.raises(SourceError) as caught:
        load_settings(path)
    assert (caught.value.file, caught.value.line) == (str(path), 4) and "not both" in caught.value.message
    path.write_text("store: {url: mysql://u@db/x}\n")
    with pytest.raises(SourceError, match="postgresql://"):
        load_settings(path)
    path.write_text("store: {url: postgresql://u@db/x, pool_size: 3}\n")
    settings = load_settings(path)
    assert settings.store.location == "postgresql://u@db/x" and settings.store.pool_size == 3


def test_the_store_url_from_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "interlock.yaml"
    path.write_text("store: {path: ./x.db, capture: metadata}\n")
    monkeypatch.setenv("INTERLOCK_STORE_URL", "postgresql://u@db/fleet")
    settings = load_settings(path)
    assert settings.store.url == "postgresql://u@db/fleet" and settings.store.capture == "metadata"
    assert load_settings(None).store.location == "postgresql://u@db/fleet"  # the embedded default too


def test_the_chain_writer_comes_from_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, named = tmp_path / "plain.yaml", tmp_path / "named.yaml"
    plain.write_text("store: {path: ./x.db}\n")
    named.write_text("store: {path: ./x.db, writer: from-file}\n")
    assert load_settings(plain).store.writer == "local"
    monkeypatch.setenv("INTERLOCK_STORE_WRITER", "pod-7")  # a fleet's pods: their own name, one config
    assert load_settings(plain).store.writer == "pod-7"
    assert load_settings(named).store.writer == "pod-7"  # the environment wins (the one rule)
    monkeypatch.setenv("INTERLOCK_STORE_WRITER", "")  # empty is unset
    assert load_settings(named).store.writer == "from-file"


def test_the_environment_wins_over_the_file_for_every_setting_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "interlock.yaml"
    key = "f" * 32
    path.write_text(f"store: {{url: postgresql://u@db/file}}\nstate: {{url: redis://file:6379/0, vault_key: {key}}}\n")
    variables = {
        "INTERLOCK_STORE_URL": ("postgresql://u@db/env", lambda s: s.store.url, "postgresql://u@db/file"),
        "INTERLOCK_STATE_URL": ("redis://env:6379/0", lambda s: s.state.resolved().url, "redis://file:6379/0"),
        "INTERLOCK_VAULT_KEY": ("e" * 32, lambda s: s.state.resolved().vault_key, key),
    }
    for name, (value, read, in_file) in variables.items():
        with monkeypatch.context() as patch:
            for other in variables:
                patch.delenv(other, raising=False)
            assert read(load_settings(path)) == in_file
            patch.setenv(name, value)
            assert read(load_settings(path)) == value, name
            patch.setenv(name, "")  # empty counts as unset
            assert read(load_settings(path)) == in_file, name
