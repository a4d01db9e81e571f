"""Flower requires basic auth and refuses to start without it."""
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import PROJECT_DIR, embedded_env
from tests.security.conftest import production_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_flower(env: dict, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "agentsite", "flower", "--address=127.0.0.1", f"--port={port}"],
        env=env, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stopped_output(flower: subprocess.Popen, timeout_s: float = 60.0) -> str:
    """The output of a Flower that must exit by itself; one still serving after ``timeout_s`` is stopped and fails."""
    try:
        output, _ = flower.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        flower.kill()
        output, _ = flower.communicate()
        pytest.fail(f"Flower started and served instead of refusing:\n{output}")
    return output


def get(url: str, **kwargs) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2, **kwargs)
    except requests.ConnectionError:
        return None


def test_flower_answers_only_with_the_basic_auth_credentials(tmp_path):
    port = free_port()
    flower = start_flower(embedded_env(tmp_path, FLOWER_BASIC_AUTH="ops:s3cret"), port)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while (anonymous := get(url)) is None and time.monotonic() < deadline and flower.poll() is None:
            time.sleep(0.2)

        assert anonymous is not None, "Flower did not start"
        for path in ("", "metrics", "healthcheck", "api/workers", "tasks"):
            assert get(url + path).status_code == 401, path
            assert get(url + path, auth=("ops", "wrong")).status_code == 401, path
            assert get(url + path, auth=("ops", "s3cret")).status_code == 200, path
        assert b"flower_" in get(url + "metrics", auth=("ops", "s3cret")).content
    finally:
        flower.terminate()
        flower.wait(timeout=10)


def test_flower_refuses_to_start_without_credentials(tmp_path):
    flower = start_flower(embedded_env(tmp_path), free_port())

    output, _ = flower.communicate(timeout=60)

    assert flower.returncode != 0
    assert "FLOWER_BASIC_AUTH must be set" in output


@pytest.mark.parametrize("credentials", ["admin:", "admin: ", ":s3cret-but-no-user"])
def test_flower_refuses_to_start_with_an_empty_user_or_password(tmp_path, credentials):
    # given credentials Flower would accept from anyone who sends them (an empty password, or no user)
    flower = start_flower(embedded_env(tmp_path, FLOWER_BASIC_AUTH=credentials), free_port())

    # when Flower starts, then it stops at once and says what to set, never echoing the value
    output = stopped_output(flower)
    assert flower.returncode != 0
    assert "FLOWER_BASIC_AUTH must be 'user:password' with neither part empty" in output
    assert "s3cret-but-no-user" not in output


def test_flower_in_production_refuses_a_guessable_password(tmp_path):
    flower = start_flower(production_env(tmp_path, FLOWER_BASIC_AUTH="ops:letmein"), free_port())

    output = stopped_output(flower)

    assert flower.returncode != 0
    assert "FLOWER_BASIC_AUTH: the password must be at least 16 random characters" in output
    assert "letmein" not in output


def test_the_procfile_s_flower_started_without_its_configuration_file_refuses_to_serve(tmp_path):
    """Flower reads its authentication from flowerconfig.py in its working directory; started elsewhere, without
    the file and without FLOWER_BASIC_AUTH in its environment, it served every page to anyone. The Procfile's command
    names the file, so a missing one stops it."""
    line = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith("flower:"))
    port = free_port()
    command = line.partition(":")[2].replace("--port=5555", f"--port={port}").split()
    env = embedded_env(tmp_path, PYTHONPATH=str(PROJECT_DIR))
    env.pop("FLOWER_BASIC_AUTH", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    flower = subprocess.Popen([sys.executable, "-m", *command], env=env, cwd=elsewhere, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    output = stopped_output(flower)

    assert flower.returncode != 0
    assert "flowerconfig.py" in output
