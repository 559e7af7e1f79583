"""The container image, built and run on this machine with buildah (docs/image.md).

The image is built by `docker/image.sh` (what `make image` runs; a no-op when nothing it is built from
changed) and its own command runs with `buildah run` on the host's network, its ports moved by the
image's environment variables. It must answer `/ready` and its health check, proxy a call to a scripted
upstream on the host, record it where its admin token guards it, run as a user other than root, and
hold exactly the versions uv.lock locks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from interlock.scripted import ScriptedUpstream
from interlock.testing import free_port
from tests.readiness import wait_ready
from tests.servers import PostgresServer, RedisServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("buildah") is None,
        reason="buildah is not installed: the image is built and run with buildah (apt-get install buildah)",
    ),
]

ROOT = Path(__file__).resolve().parent.parent
TAG = os.environ.get("IMAGE") or "localhost/interlock:latest"
TOKEN = "image-test-admin-token"
#: A cold base (debootstrap) plus a cold build take about 2 minutes here; a slow mirror may take longer.
BUILD_TIMEOUT = 1800
#: A cold start on a loaded 2-core machine: the guardrails engine is built before /ready says 200.
READY_TIMEOUT = 180


@dataclass
class Image:
    tag: str
    config: dict[str, Any]  # the OCI image config: Entrypoint, Cmd, User, Env, Healthcheck (docker format)
    healthcheck: list[str]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    log = tmp_path_factory.mktemp("image") / "build.log"
    with log.open("wb") as out:
        built = subprocess.run(
            [str(ROOT / "docker" / "image.sh"), TAG],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
        )
    if built.returncode != 0:
        pytest.fail(f"docker/image.sh {TAG} failed ({built.returncode}):\n{log.read_text()[-4000:]}")
    inspected = json.loads(_buildah("inspect", "--type", "image", TAG))
    return Image(TAG, inspected["OCIv1"]["config"], inspected["Docker"]["config"]["Healthcheck"]["Test"])


@dataclass
class Container:
    name: str
    env: list[str]  # --env arguments: what every command run in it sees
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def command(self, *argv: str) -> list[str]:
        """`buildah run` of argv in this container, on the host's network (its ports are the host's)."""
        return ["buildah", "run", "--isolation", "chroot", "--network", "host", *self.env, self.name, "--", *argv]


@pytest.fixture
def container(image: Image, upstream: ScriptedUpstream) -> Iterator[Container]:
    name = f"interlock-test-{uuid.uuid4().hex[:12]}"
    _buildah("from", "--name", name, image.tag)
    port, admin_port = free_port(), free_port()
    settings = {
        "INTERLOCK_SERVE_PORT": port,
        "INTERLOCK_SERVE_ADMIN_PORT": admin_port,
        "INTERLOCK_ADMIN_TOKEN": TOKEN,
        # docker/interlock.yaml's `local` route: an OpenAI-compatible server, here the scripted one.
        "LOCAL_MODEL_URL": upstream.url + "/v1",
    }
    env = [f"--env={key}={value}" for key, value in settings.items()]
    try:
        yield Container(name, env, port, admin_port)
    finally:
        _buildah("rm", name)


def _buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def _wait_recorded(container: Container, route: str = "local") -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while True:
        reply = httpx.get(container.admin_url + "/api/calls", headers=headers, params={"route": route})
        assert reply.status_code == 200, reply.text
        calls: list[dict[str, Any]] = reply.json()["calls"]
        if calls:
            return calls
        assert time.monotonic() < deadline, "the proxied call was not recorded"
        time.sleep(0.05)


def test_the_image_serves_ready_and_a_proxied_call(
    image: Image, container: Container, upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    argv = [*image.config["Entrypoint"], *image.config.get("Cmd", [])]
    assert argv == ["interlock", "serve"]
    with log.open("wb") as out:
        process = subprocess.Popen(container.command(*argv), stdout=out, stderr=subprocess.STDOUT)
        try:
            ready = wait_ready(container.admin_url, process, timeout=READY_TIMEOUT, log=log)
            assert ready.json()["status"] == "ready"

            health = subprocess.run(container.command(*image.healthcheck[1:]), capture_output=True, timeout=60)
            assert image.healthcheck[0] == "CMD" and health.returncode == 0, health.stderr.decode()

            reply = httpx.post(
                container.url + "/local/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                headers={"X-Interlock-Agent": "image-test"},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "echo: hi"
            assert upstream.requests[-1].path == "/v1/chat/completions"

            assert httpx.get(container.admin_url + "/api/calls").status_code == 401  # INTERLOCK_ADMIN_TOKEN
            (call,) = _wait_recorded(container)
            assert (call["agent"], call["status"]) == ("image-test", 200)
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_the_image_runs_as_a_user_and_holds_what_uv_lock_locks(image: Image, container: Container) -> None:
    assert image.config.get("User") not in (None, "", "root", "0")
    probe = (
        "import json, os, importlib.metadata as m; print(json.dumps({'uid': os.getuid(), "
        "'installed': {d.metadata['Name']: d.version for d in m.distributions()}}))"
    )
    done = subprocess.run(container.command("python", "-c", probe), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["uid"] != 0

    def name(text: str) -> str:
        return re.sub(r"[-_.]+", "-", text).lower()

    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {name(p["name"]): p.get("version") for p in lock["package"]}
    installed = {name(n): v for n, v in found["installed"].items()}
    assert installed.pop("interlock", None) is not None
    assert {n: v for n, v in installed.items() if locked.get(n) != v} == {}
    (own,) = [p for p in lock["package"] if name(p["name"]) == "interlock"]
    wanted = {name(d["name"]) for d in own["dependencies"]}
    # `all`, as pyproject.toml defines it (interlock[guardrails,policy,otel,fleet]): the image installs it.
    (everything,) = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["all"]
    extras = re.fullmatch(r"interlock\[(.+)\]", everything).group(1).split(",")  # type: ignore[union-attr]
    assert "fleet" in extras
    for extra in extras:
        wanted |= {name(d["name"]) for d in own["optional-dependencies"][extra]}
    assert wanted - installed.keys() == set()


def test_the_image_runs_the_fleet_configuration_on_postgresql_and_redis(
    image: Image,
    container: Container,
    upstream: ScriptedUpstream,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """deploy/interlock.yaml (the configuration deploy/compose.yaml and the shared Kubernetes Deployment
    run) in the image, given its store, state and vault key by the environment as their Secrets give
    them: ready on a real PostgreSQL and Redis, a call redacted on the way up and restored on the way
    back, recorded in PostgreSQL with the placeholder only, the vault's entry in Redis."""
    config_dir = tmp_path / "config"
    (config_dir / "policies").mkdir(parents=True)
    config = yaml.safe_load((ROOT / "deploy" / "interlock.yaml").read_text())
    config["routes"]["openai"]["upstream"] = upstream.url + "/v1"  # the scripted provider, not OpenAI's
    (config_dir / "interlock.yaml").write_text(yaml.safe_dump(config))
    shutil.copy(ROOT / "deploy" / "policies" / "fleet.yaml", config_dir / "policies" / "fleet.yaml")
    config_dir.chmod(0o755)  # read by the image's user
    database = postgres_server.database("image_fleet")
    redis_server.flush()
    fleet_env = {
        "INTERLOCK_SERVE_CONFIG": "/config/interlock.yaml",
        "INTERLOCK_STORE_URL": database,
        "INTERLOCK_STATE_URL": redis_server.url,
        "INTERLOCK_VAULT_KEY": "image-test-vault-key-" + "k" * 24,
    }
    env = [*container.env, *(f"--env={key}={value}" for key, value in fleet_env.items())]
    fleet = Container(container.name, [*env, f"--volume={config_dir}:/config:ro"], container.port, container.admin_port)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(fleet.command("interlock", "serve"), stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(fleet.admin_url, process, timeout=READY_TIMEOUT, log=log)
            reply = httpx.post(
                fleet.url + "/openai/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "mail jane.doe@example.com"}]},
                headers={"X-Interlock-Agent": "image-fleet", "X-Interlock-Session": "s-image"},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == "echo: mail jane.doe@example.com"
            sent = upstream.requests[-1].body
            assert b"jane.doe@example.com" not in sent and b"<EMAIL_ADDRESS_1>" in sent

            (call,) = _wait_recorded(fleet, route="openai")
            assert (call["agent"], call["session"], call["status"]) == ("image-fleet", "s-image", 200)
            stored = postgres_server.psql("SELECT count(*) FROM calls", database=database.rsplit("/", 1)[1])
            assert stored.strip() == "1"
            detail = httpx.get(
                f"{fleet.admin_url}/api/calls/{call['id']}", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert detail.status_code == 200 and "jane.doe@example.com" not in detail.text
            vault = redis.Redis.from_url(redis_server.url)
            try:
                assert vault.keys("interlock:v:*")
                assert not [k for k in vault.keys("*") if b"jane.doe" in k]
            finally:
                vault.close()
        finally:
            process.terminate()
            process.wait(timeout=60)
