"""docker-compose.yml runs the production shape: every queue served, one beat, health-checked, no secrets in the file."""
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
COMPOSE_FILE = PROJECT_DIR / "docker-compose.yml"

#: Every queue a task can be routed to (settings.CELERY_TASK_QUEUES) must have a consumer.
QUEUES = {"default", "workflow", "decision", "data", "monitoring"}
SECRET_NAMES = ("SECRET_KEY", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "AGENTS_ENCRYPTION_KEYS", "AGENTS_MESSAGE_KEY")
REQUIRED_SECRETS = {"SECRET_KEY": "s3cret-for-test", "POSTGRES_PASSWORD": "pw-for-test", "FLOWER_BASIC_AUTH": "u:p",
                    "AGENTS_ENCRYPTION_KEYS": "key-for-test", "AGENTS_MESSAGE_KEY": "message-key-for-test"}
#: Services only the compose network may reach: they publish no port on the host.
INTERNAL_SERVICES = ("postgres", "redis")


def _services() -> dict:
    """The services of docker-compose.yml, with YAML anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def _command(service: dict) -> list[str]:
    """A service's command as a list of arguments, whichever form the file uses."""
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _environment(service: dict) -> dict[str, str]:
    """A service's environment as a mapping, whichever form (mapping or KEY=value list) the file uses."""
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def _consumed_queues(arguments: list[str]) -> set[str]:
    """The queues a ``celery worker`` command line consumes (``-Q a,b``, ``--queues a,b`` or ``--queues=a,b``)."""
    queues: set[str] = set()
    for index, argument in enumerate(arguments):
        if argument in ("-Q", "--queues") and index + 1 < len(arguments):
            queues.update(arguments[index + 1].split(","))
        elif argument.startswith("--queues="):
            queues.update(argument.split("=", 1)[1].split(","))
    return queues


def _runs_beat(arguments: list[str]) -> bool:
    """Whether a command line starts celery beat, standalone or embedded in a worker (``-B``/``--beat``)."""
    if not arguments or Path(arguments[0]).name != "celery":
        return False
    return "beat" in arguments or ("worker" in arguments and ({"-B", "--beat"} & set(arguments)))


def _one_shot_services(services: dict) -> set[str]:
    """Services others wait on to finish (migrations): they exit by design, so they are not long-running."""
    one_shot = set()
    for service in services.values():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, dict):
            for name, condition in depends_on.items():
                if condition.get("condition") == "service_completed_successfully":
                    one_shot.add(name)
    return one_shot


def _compose_config(environment: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``docker-compose config -q`` with exactly these secrets set (no .env from the working tree)."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose is not None, (
        "docker-compose is not installed; install it with `apt-get install docker-compose` to validate docker-compose.yml"
    )
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {key: value for key, value in os.environ.items() if key not in SECRET_NAMES}
    env.update(environment)
    return subprocess.run(
        [docker_compose, "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_runs_every_queue_one_beat_health_checked_without_secrets_in_the_file():
    """Given docker-compose.yml, the stack it describes serves every queue, schedules once and holds no secret."""
    services = _services()

    assert {"postgres", "redis", "web", "beat", "flower"} <= services.keys()

    beat_services = [name for name, service in services.items() if _runs_beat(_command(service))]
    assert beat_services == ["beat"], f"exactly one service must run celery beat, found {beat_services}"

    consumed = set()
    for service in services.values():
        arguments = _command(service)
        if arguments and Path(arguments[0]).name == "celery" and "worker" in arguments:
            consumed |= _consumed_queues(arguments)
    assert QUEUES <= consumed, f"no worker consumes {sorted(QUEUES - consumed)}"

    long_running = services.keys() - _one_shot_services(services)
    assert "migrate" not in long_running
    for name in sorted(long_running):
        healthcheck = services[name].get("healthcheck")
        assert healthcheck and healthcheck.get("test") and not healthcheck.get("disable"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", f"{name} is not restarted when it dies"

    assert "FLOWER_BASIC_AUTH" in _environment(services["flower"])

    interpolation = {name: re.compile(r"^\$\{" + name + r"(:\?[^}]*)?\}$") for name in SECRET_NAMES}
    for name, service in services.items():
        environment = _environment(service)
        for secret in SECRET_NAMES:
            if secret in environment:
                assert interpolation[secret].match(environment[secret]), f"{name} has a literal {secret}"
        if "DATABASE_URL" in environment:
            password = re.match(r"^postgres://[^:]+:(.*)@[^@]+$", environment["DATABASE_URL"]).group(1)
            assert interpolation["POSTGRES_PASSWORD"].match(password), f"{name} has a literal database password"


def test_compose_config_validates_and_refuses_to_start_without_secret_key(tmp_path):
    """Given the secrets, compose accepts the file; without SECRET_KEY it refuses and names the missing variable."""
    complete = _compose_config(REQUIRED_SECRETS, tmp_path)
    assert complete.returncode == 0, complete.stderr

    without_secret_key = {key: value for key, value in REQUIRED_SECRETS.items() if key != "SECRET_KEY"}
    missing = _compose_config(without_secret_key, tmp_path)
    assert missing.returncode != 0
    assert "SECRET_KEY" in missing.stdout + missing.stderr


def test_compose_keeps_the_database_and_broker_off_the_host_and_serves_https_behind_a_proxy():
    """Given docker-compose.yml, PostgreSQL and Redis are reachable only inside the stack, and every process runs
    with production's transport security and shared keys."""
    services = _services()

    for name in INTERNAL_SERVICES:
        assert "ports" not in services[name], f"{name} publishes a port on the host"
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["flower", "web"]

    for name, service in services.items():
        environment = _environment(service)
        if "DATABASE_URL" not in environment:
            continue  # postgres and redis themselves
        assert environment.get("AGENTS_HTTPS", "").lower() in ("1", "true"), f"{name} does not run https-only"
        assert environment.get("AGENTS_PROXY_SSL_HEADER"), f"{name} does not trust the proxy's https header"
        assert environment.get("DEBUG", "").lower() in ("0", "false"), f"{name} runs with DEBUG on"

    flower_command = _command(services["flower"])
    assert "--basic-auth" not in " ".join(flower_command), "Flower's credentials belong in the environment"


@pytest.mark.parametrize("missing", ["AGENTS_ENCRYPTION_KEYS", "AGENTS_MESSAGE_KEY", "FLOWER_BASIC_AUTH"])
def test_compose_refuses_to_start_without_a_shared_key_or_flower_credentials(tmp_path, missing):
    """Without a key every container must share, or Flower's basic auth, compose refuses and names the variable."""
    result = _compose_config({key: value for key, value in REQUIRED_SECRETS.items() if key != missing}, tmp_path)

    assert result.returncode != 0
    assert missing in result.stdout + result.stderr


def test_every_process_of_the_compose_stack_shares_one_cache_in_redis():
    """Given the compose stack, every container running the code keeps its decision cache, throttling counts and
    breaker states in the stack's Redis, apart from the broker's database, not in files of its own."""
    services = _services()
    running_the_code = {name: _environment(service) for name, service in services.items()
                        if "DATABASE_URL" in _environment(service)}

    assert {"web", "beat", "worker-decision"} <= running_the_code.keys()
    for name, environment in running_the_code.items():
        assert environment.get("CACHE_URL", "").startswith("redis://redis:6379/"), f"{name} has no shared cache"
        assert environment["CACHE_URL"] != environment["CELERY_BROKER_URL"], f"{name} caches in the broker's database"
