# agentsite: `make run` starts the whole stack, `make test` runs the whole suite.
# Both create .venv and install requirements.txt themselves.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements-installed

# Tests talk to the machine's real services unless the environment names others.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
TEST_CACHE_URL ?= redis://127.0.0.1:6379/12
# The fault scenarios and API tests run beside the rest (bin/test), on a database and Redis databases of their own.
BESIDE_DATABASE_URL ?= $(TEST_DATABASE_URL)_beside
BESIDE_BROKER_URL ?= redis://127.0.0.1:6379/10
BESIDE_CACHE_URL ?= redis://127.0.0.1:6379/9

.PHONY: venv run test lint-imports demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else "Python 3.11 or newer is required; found " + sys.version)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: venv
	bin/run

test: venv lint-imports
	bin/ensure-services
	TEST_DATABASE_URL=$(TEST_DATABASE_URL) TEST_BROKER_URL=$(TEST_BROKER_URL) TEST_CACHE_URL=$(TEST_CACHE_URL) \
		BESIDE_DATABASE_URL=$(BESIDE_DATABASE_URL) BESIDE_BROKER_URL=$(BESIDE_BROKER_URL) \
		BESIDE_CACHE_URL=$(BESIDE_CACHE_URL) bin/test $(PYTEST_ARGS)

# The layers (.importlinter): interfaces -> workers -> areas -> expressions -> kernel -> models, areas independent.
lint-imports: venv
	$(BIN)/lint-imports

demo: venv
	@rm -rf var/demo
	@env -u DATABASE_URL -u CELERY_BROKER_URL -u CELERY_RESULT_BACKEND AGENTS_VAR_DIR=$(CURDIR)/var/demo \
		$(BIN)/python manage.py demo

bench: venv
	@for script in bench/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf var/demo var/broker
