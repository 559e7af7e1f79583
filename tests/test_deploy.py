"""deploy/: the Kubernetes manifests and the compose file are checked offline, since no cluster and no
Docker engine run here. Kubernetes objects validate against the API's own schemas (kubernetes-validate,
strict: an unknown or misspelt field fails); the compose file is checked for the structure the fleet
needs; the interlock configuration each one carries passes `interlock config check` with the
environment the manifest gives the container, and loads into the settings the environment names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes

from interlock.config import load_settings
from interlock.policies.stage import policy_paths
from interlock.proxy.admission import HostAllowList
from interlock.yamlsource import SourceError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
IMAGE = "localhost/interlock:latest"  # docs/image.md: what `make image` tags

#: 1.33: the first release with native sidecar containers (an init container with restartPolicy:
#: Always) stable, which sidecar.yaml relies on, so the oldest the manifests claim; 1.37: the newest
#: schemas kubernetes-validate ships. Both, so a field added or removed in between is caught.
KUBERNETES_VERSIONS = ("1.33", "1.37")

#: What a container gets for each Secret key in the config-check runs: shaped like real values (a
#: vault key must be 32+ characters), reaching nothing (`config check` connects to no server).
SECRET_VALUES = {
    "store-url": "postgresql://interlock:pw@postgres.example:5432/interlock",
    "state-url": "redis://:pw@redis.example:6379/0",
    "vault-key": "k" * 44,
    "admin-token": "t" * 64,
    "openai-api-key": "sk-test",
    "anthropic-api-key": "sk-ant-test",
}

#: The name Kubernetes gives a pod of a Deployment (the downward API's `metadata.name`).
POD_NAME = "interlock-5c7f9d8b6-x2kqp"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def of_kind(kind: str, path: Path) -> list[dict[str, Any]]:
    return [d for d in documents(path) if d["kind"] == kind]


def interlock_container(deployment: dict[str, Any]) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    found = [c for c in [*spec.get("initContainers", []), *spec["containers"]] if c["image"] == IMAGE]
    assert len(found) == 1, f"{deployment['metadata']['name']}: one interlock container"
    return found[0]


def config_of(manifest: Path) -> dict[str, Any]:
    """The interlock.yaml the manifest's ConfigMap holds, parsed."""
    (config_map,) = of_kind("ConfigMap", manifest)
    parsed: dict[str, Any] = yaml.safe_load(config_map["data"]["interlock.yaml"])
    return parsed


def lay_out_config(manifest: Path, into: Path) -> Path:
    """Write the ConfigMap's keys where the Deployment's volume items mount them; return the path
    INTERLOCK_SERVE_CONFIG names, relative to the mount."""
    (config_map,) = of_kind("ConfigMap", manifest)
    (deployment,) = of_kind("Deployment", manifest)
    container = interlock_container(deployment)
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]])
    assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    for item in volumes[mount["name"]]["configMap"]["items"]:
        target = into / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
    serve_config = next(e["value"] for e in container["env"] if e["name"] == "INTERLOCK_SERVE_CONFIG")
    return into / os.path.relpath(serve_config, mount["mountPath"])


def container_environment(container: dict[str, Any], pod_labels: dict[str, str]) -> dict[str, str]:
    """The environment Kubernetes would give the container, Secrets replaced by SECRET_VALUES."""
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry["valueFrom"]:
            env[entry["name"]] = SECRET_VALUES[entry["valueFrom"]["secretKeyRef"]["key"]]
        elif entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[entry["name"]] = POD_NAME
        else:
            path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
            assert label, f"{entry['name']}: an unexpected fieldRef {path}"
            env[entry["name"]] = pod_labels[label.group(1)]
    return env


def config_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`interlock config check --json` with only `env` (and PATH) in the environment, so a variable
    the manifest does not set is missing here too."""
    return subprocess.run(
        [sys.executable, "-m", "interlock.cli", "config", "check", "--json", "-c", str(config)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- Kubernetes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("manifest", MANIFESTS, ids=[m.name for m in MANIFESTS])
def test_every_object_validates_against_the_kubernetes_schemas(manifest: Path, version: str) -> None:
    objects = documents(manifest)
    assert objects
    for obj in objects:
        kubernetes.validate(obj, version, strict=True)


def test_the_validation_refuses_a_misspelt_field() -> None:
    """The check above can fail: strict schemas refuse a field Kubernetes does not know."""
    (deployment,) = of_kind("Deployment", KUBERNETES / "shared.yaml")
    container = interlock_container(deployment)
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes.ValidationError):
        kubernetes.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("manifest", ["shared.yaml", "sidecar.yaml"])
def test_the_interlock_container_is_probed_unprivileged_and_bounded(manifest: str) -> None:
    path = KUBERNETES / manifest
    (deployment,) = of_kind("Deployment", path)
    config = config_of(path)
    container = interlock_container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == config["admin"]["port"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    assert container["startupProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    # The probes reach the admin port by the pod's address: it must listen there (behind the token).
    assert config["admin"]["host"] == "0.0.0.0" and config["admin"]["token"] == "${INTERLOCK_ADMIN_TOKEN}"

    security = {**pod.get("securityContext", {}), **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    # A read-only root: what interlock writes goes to bounded emptyDirs.
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path_ in ("/data", "/tmp"):
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == path_)
        assert volumes[mount["name"]]["emptyDir"]["sizeLimit"]

    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert parse_mib(resources["limits"]["memory"]) >= parse_mib(resources["requests"]["memory"])
    # The pod outlives interlock's own drain.
    assert pod["terminationGracePeriodSeconds"] > config["shutdown_grace"]


def parse_mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_shared_gateway_is_two_replicas_behind_a_service() -> None:
    path = KUBERNETES / "shared.yaml"
    (deployment,) = of_kind("Deployment", path)
    (service,) = of_kind("Service", path)
    (budget,) = of_kind("PodDisruptionBudget", path)
    config = config_of(path)
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = interlock_container(deployment)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    targets = {p["name"]: named[p["targetPort"]] for p in service["spec"]["ports"]}
    assert targets == {"proxy": config["listen"]["port"], "admin": config["admin"]["port"]}
    # Agents call it by the Service's name, in its namespace or from another, which the proxy must
    # answer; other names stay refused (DNS rebinding: docs/security.md).
    hosts = HostAllowList(config["listen"]["host"], config["listen"]["allowed_hosts"])
    name = service["metadata"]["name"]
    for host in (name, f"{name}.agents.svc", f"{name}.agents.svc.cluster.local:4141", "10.0.0.7"):
        assert hosts.allows(host), host
    assert not hosts.allows("attacker.example")
    assert config["listen"]["host"] == "0.0.0.0"


def test_the_sidecar_starts_before_the_agent_and_the_agent_points_at_it() -> None:
    path = KUBERNETES / "sidecar.yaml"
    (deployment,) = of_kind("Deployment", path)
    config = config_of(path)
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["image"] == IMAGE and sidecar["restartPolicy"] == "Always"
    assert config["listen"]["host"] == "127.0.0.1"  # only the agent beside it
    (agent,) = pod["containers"]
    env = {e["name"]: e["value"] for e in agent["env"]}
    port = config["listen"]["port"]
    assert env["OPENAI_BASE_URL"] == f"http://127.0.0.1:{port}/openai"
    assert env["ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}/anthropic"
    assert {"openai", "anthropic"} <= set(config["routes"])


def test_the_shared_configmap_holds_deploy_interlock_yaml_unchanged() -> None:
    """One fleet configuration: compose mounts deploy/interlock.yaml, Kubernetes embeds the same text."""
    (config_map,) = of_kind("ConfigMap", KUBERNETES / "shared.yaml")
    assert config_map["data"]["interlock.yaml"] == (DEPLOY / "interlock.yaml").read_text()
    assert config_map["data"]["fleet.yaml"] == (DEPLOY / "policies" / "fleet.yaml").read_text()


def test_every_secret_reference_names_a_key_of_the_example_secret() -> None:
    (secret,) = of_kind("Secret", KUBERNETES / "secrets.example.yaml")
    keys = set(secret["stringData"])
    assert keys == set(SECRET_VALUES)
    for manifest in ("shared.yaml", "sidecar.yaml"):
        for deployment in of_kind("Deployment", KUBERNETES / manifest):
            for entry in interlock_container(deployment)["env"]:
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in keys, entry


@pytest.mark.parametrize("manifest", ["shared.yaml", "sidecar.yaml"])
def test_the_embedded_config_passes_config_check_with_the_pods_environment(manifest: str, tmp_path: Path) -> None:
    path = KUBERNETES / manifest
    (deployment,) = of_kind("Deployment", path)
    config = lay_out_config(path, tmp_path)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    env = container_environment(interlock_container(deployment), labels)
    checked = config_check(config, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    answer = json.loads(checked.stdout)
    assert answer["ok"] is True and answer["warnings"] == []


@pytest.mark.parametrize("manifest", ["shared.yaml", "sidecar.yaml"])
def test_the_environment_the_manifest_sets_is_what_interlock_reads(
    manifest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable names are real: each value given lands in the setting it is meant for."""
    path = KUBERNETES / manifest
    (deployment,) = of_kind("Deployment", path)
    config = lay_out_config(path, tmp_path)
    container = interlock_container(deployment)
    env = container_environment(container, deployment["spec"]["template"]["metadata"]["labels"])
    for name in [n for n in os.environ if n.startswith("INTERLOCK_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config)
    assert settings.store.url == SECRET_VALUES["store-url"]
    state = settings.state.resolved()
    assert state.url == SECRET_VALUES["state-url"] and state.vault_key == SECRET_VALUES["vault-key"]
    assert settings.admin.token == SECRET_VALUES["admin-token"]
    assert settings.routes["openai"].api_key == SECRET_VALUES["openai-api-key"]
    assert settings.routes["anthropic"].api_key == SECRET_VALUES["anthropic-api-key"]
    # Each pod extends a tamper-evident chain of its own in the shared store (docs/audit.md, docs/fleet.md).
    assert settings.store.writer == POD_NAME
    assert settings.policies and all((Path(p) / "fleet.yaml").is_file() for p in policy_paths(settings))
    # INTERLOCK_SERVE_CONFIG is `serve --config`'s own variable (docs: every flag is one).
    from interlock.cli import main

    serve = main.get_command(None, "serve")  # type: ignore[arg-type]
    assert serve is not None
    assert "INTERLOCK_SERVE_CONFIG" in {p.envvar for p in serve.params}
    assert container["args"] == ["serve"]
    # Fail closed: a pod whose Secret lacks the store's URL, or holds an empty one, does not start on
    # some other store; nor on in-process state when the state URL is empty.
    monkeypatch.delenv("INTERLOCK_STORE_URL")
    with pytest.raises(SourceError, match="INTERLOCK_STORE_URL"):
        load_settings(config)
    monkeypatch.setenv("INTERLOCK_STORE_URL", env["INTERLOCK_STORE_URL"])
    for name, setting in (("INTERLOCK_STORE_URL", "store.url"), ("INTERLOCK_STATE_URL", "state.url")):
        with monkeypatch.context() as patch:
            patch.setenv(name, "")
            with pytest.raises(SourceError, match=setting):
                load_settings(config)


# -- compose --------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose.yaml"
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    lines = (DEPLOY / "env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$, as `docker compose config` reads them."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == ":?":
            raise LookupError(f"{name}: {rest}")
        return rest or ""

    return "$".join(_INTERPOLATION.sub(one, part) for part in value.split("$$"))


def strings(node: Any) -> list[str]:
    """Every string value in a parsed YAML document."""
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_runs_two_interlocks_on_postgres_and_redis() -> None:
    services = compose_services()
    assert set(services) == {"interlock-a", "interlock-b", "postgres", "redis"}
    config = yaml.safe_load((DEPLOY / "interlock.yaml").read_text())
    published, writers = [], []
    for name in ("interlock-a", "interlock-b"):
        service = services[name]
        assert service["image"] == IMAGE and service["command"] == ["serve"]
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert f"127.0.0.1:{config['admin']['port']}/ready" in " ".join(service["healthcheck"]["test"])
        assert "interlock" in service["networks"]["default"]["aliases"]  # the name agents call
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert int(service["stop_grace_period"].rstrip("s")) > config["shutdown_grace"]
        # Both ports, on loopback only (the admin port serves every recorded prompt).
        ports = [p.split(":") for p in service["ports"]]
        assert {int(p[2]) for p in ports} == {config["listen"]["port"], config["admin"]["port"]}
        assert all(p[0] == "127.0.0.1" for p in ports)
        published += [p[1] for p in ports]
        # The configuration and policies it mounts are deploy/'s, where the config file expects them.
        mounts = dict(v.split(":")[:2] for v in service["volumes"])
        serve_config = service["environment"]["INTERLOCK_SERVE_CONFIG"]
        assert all((COMPOSE.parent / source).exists() for source in mounts if source.startswith("./"))
        assert mounts["./interlock.yaml"] == serve_config
        (policies,) = config["policies"]
        assert mounts["./policies"] == str(Path(serve_config).parent / policies)
        assert any(target == "/data" for target in mounts.values())
        writers.append(service["environment"]["INTERLOCK_STORE_WRITER"])
    assert len(published) == len(set(published))
    assert writers == ["interlock-a", "interlock-b"]  # a chain each in the shared store (docs/audit.md)
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


def test_compose_takes_every_credential_from_the_env_file_and_refuses_without_it() -> None:
    services = compose_services()
    example = env_example()
    used = {
        m.group(1) for value in strings(yaml.safe_load(COMPOSE.read_text())) for m in _INTERPOLATION.finditer(value)
    }
    assert used and used <= set(example)
    assert all(value == "" for value in example.values())  # the example holds no value to forget
    for service in services.values():
        for name, value in service.get("environment", {}).items():
            # Every credential is interpolated, and required (:?) unless it is an optional provider key.
            if re.search(r"PASSWORD|TOKEN|KEY|_URL", name):
                required = re.findall(r"\$\{[A-Z_]+:\?", value)
                assert required or name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"), (name, value)
    with pytest.raises(LookupError):
        interpolate(services["interlock-a"]["environment"]["INTERLOCK_STORE_URL"], {})
    assert ".env" in (ROOT / ".gitignore").read_text()


def test_compose_config_passes_config_check_with_the_services_environment(tmp_path: Path) -> None:
    filled = {name: "x" * 40 for name in env_example()}
    service = compose_services()["interlock-a"]
    env = {name: interpolate(str(value), filled) for name, value in service["environment"].items()}
    assert env["INTERLOCK_STORE_URL"] == f"postgresql://interlock:{'x' * 40}@postgres:5432/interlock"
    config = tmp_path / "interlock.yaml"
    config.write_text((DEPLOY / "interlock.yaml").read_text())
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "fleet.yaml").write_text((DEPLOY / "policies" / "fleet.yaml").read_text())
    checked = config_check(config, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
