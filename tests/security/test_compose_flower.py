"""Flower in the compose stack: reachable from the host's loopback only (it speaks plain http, so its basic auth
must not cross a network), its credentials given to the Flower container alone, and its health probe logged in."""
import subprocess
import sys

from tests.conftest import PROJECT_DIR, embedded_env
from tests.test_compose import _environment, _services
from tests.test_flower import free_port, start_flower


def _host_addresses(ports: list) -> list[str]:
    """The host address each published port binds to ('' for every interface), in short or long syntax."""
    addresses = []
    for port in ports:
        if isinstance(port, dict):
            addresses.append(str(port.get("host_ip", "")))
        else:
            parts = str(port).split(":")
            addresses.append(":".join(parts[:-2]) if len(parts) > 2 else "")
    return addresses


def test_flower_is_published_on_the_host_s_loopback_only():
    # given the compose stack
    flower = _services()["flower"]

    # then Flower's port is bound to 127.0.0.1, never to every interface of the host
    addresses = _host_addresses(flower.get("ports", []))
    assert addresses and all(address == "127.0.0.1" for address in addresses), flower.get("ports")


def test_only_the_flower_container_holds_flower_s_credentials():
    services = _services()

    holding = sorted(name for name, service in services.items() if "FLOWER_BASIC_AUTH" in _environment(service))

    assert holding == ["flower"]
    # and Flower still gets everything else the code needs
    assert _environment(services["web"]).items() <= _environment(services["flower"]).items()


def test_the_flower_health_probe_logs_in_so_a_healthy_flower_is_reported_healthy(tmp_path):
    # given Flower running with its basic auth, as the compose stack runs it
    port = free_port()
    env = embedded_env(tmp_path, FLOWER_BASIC_AUTH="ops:a-long-random-flower-password")
    flower = start_flower(env, port)
    try:
        for line in flower.stdout:  # Flower listens before it logs where
            if "Visit me at" in line:
                break
        assert flower.poll() is None, "Flower did not start"

        # when the compose file's health probe runs against it
        _, *probe = [str(part) for part in _services()["flower"]["healthcheck"]["test"]]  # after "CMD"
        probe = [sys.executable if part == "python" else part.replace("localhost:5555", f"127.0.0.1:{port}")
                 for part in probe]
        result = subprocess.run(probe, env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=30)

        # then it passes (a probe refused 401 would mark a working Flower unhealthy for ever)
        assert result.returncode == 0, result.stderr
    finally:
        flower.terminate()
        flower.wait(timeout=10)

