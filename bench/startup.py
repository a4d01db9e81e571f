"""How long a command takes to start: ``manage.py help`` and ``manage.py workflow list`` against a bare Django
project made on the spot (``django-admin startproject``) with the same interpreter.

Each command runs ``REPEATS`` times after one warm-up run (which also writes the bytecode caches, as any
installation has them), with ``PYTHONDONTWRITEBYTECODE`` removed from the environment; the median wall time is
printed as one JSON line per command. The database is PostgreSQL (``DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/agentsite_bench``, migrated when missing), so ``workflow list`` reads a real
one. Also printed: which heavy libraries a plain ``django.setup()`` imports (none is the goal).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
REPEATS = 7
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
ENV.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agentsite_bench")
ENV["DJANGO_SETTINGS_MODULE"] = "agentsite.settings"
HEAVY = ("pandas", "numpy", "pyarrow", "sklearn", "skops", "requests", "jsonschema", "redis", "cryptography")


def timed(command: list[str], cwd: Path) -> float:
    """Median seconds of ``command`` over ``REPEATS`` runs after a warm-up; a failing command stops the bench."""
    subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True)
    seconds = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def database_ready() -> None:
    """Create and migrate the bench database when missing."""
    name = ENV["DATABASE_URL"].rsplit("/", 1)[1]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"create database {name}"],
                   capture_output=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=PROJECT_DIR, env=ENV, check=True)


def main() -> None:
    database_ready()
    manage = [sys.executable, "manage.py"]
    with tempfile.TemporaryDirectory() as bare:
        django_admin = Path(sys.executable).parent / "django-admin"
        subprocess.run([str(django_admin), "startproject", "bare", bare], check=True)
        bare_env = {**ENV, "DJANGO_SETTINGS_MODULE": "bare.settings"}
        subprocess.run([sys.executable, "manage.py", "help"], cwd=bare, env=bare_env, check=True, capture_output=True)
        started = []
        for _ in range(REPEATS):
            at = time.perf_counter()
            subprocess.run([sys.executable, "manage.py", "help"], cwd=bare, env=bare_env, check=True,
                           capture_output=True)
            started.append(time.perf_counter() - at)
        bare_s = statistics.median(started)
    print(json.dumps({"bench": "start", "command": "bare django: manage.py help", "seconds": round(bare_s, 3)}))
    for args in (["help"], ["workflow", "list"]):
        seconds = timed([*manage, *args], PROJECT_DIR)
        print(json.dumps({"bench": "start", "command": "manage.py " + " ".join(args), "seconds": round(seconds, 3),
                          "goal_s": 0.5, "vs_bare_django": round(seconds / bare_s, 2)}))
    probe = f"import sys, django; django.setup(); print([m for m in {HEAVY!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_DIR, env=ENV, check=True,
                            capture_output=True, text=True).stdout.strip()
    print(json.dumps({"bench": "start", "heavy_libraries_after_setup": json.loads(loaded.replace("'", '"'))}))


if __name__ == "__main__":
    main()
