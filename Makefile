# breakglass: `make run` starts the demo, `make test` installs what it needs and runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVICES := scripts/services.sh

.PHONY: install run test check unit integration e2e bench fuzz services-start services-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

run: install
	$(BIN)/breakglass demo

check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src
	$(BIN)/lint-imports

# Starts real PostgreSQL, Redis, sshd, the AWS emulator and the OIDC provider on
# 127.0.0.1, runs every tier, and stops them again by PID (KEEP_SERVICES=1 keeps them).
test: install check
	$(SERVICES) start
	@set -a; eval "$$($(SERVICES) env)"; set +a; \
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ -z "$(KEEP_SERVICES)" ]; then $(SERVICES) stop; fi; exit $$rc

unit: install
	$(BIN)/pytest -q -m unit

# Longer budgets than make test's: schema fuzzing (BG_FUZZ_EXAMPLES per operation) and the
# lifecycle model (BG_FSM_EXAMPLES runs of BG_FSM_STEPS steps, on SQLite and PostgreSQL).
fuzz: install
	$(SERVICES) start
	@set -a; eval "$$($(SERVICES) env)"; set +a; \
	BG_FUZZ_EXAMPLES=$${BG_FUZZ_EXAMPLES:-300} BG_FSM_EXAMPLES=$${BG_FSM_EXAMPLES:-300} \
	BG_FSM_STEPS=$${BG_FSM_STEPS:-60} $(BIN)/pytest -q -p no:cacheprovider \
		tests/e2e/test_api_fuzz.py tests/integration/test_lifecycle_model.py

bench: install
	$(SERVICES) start
	@set -a; eval "$$($(SERVICES) env)"; set +a; \
	$(BIN)/python bench/activation.py && $(BIN)/python bench/audit.py && \
	$(BIN)/python bench/audit_merkle.py && $(BIN)/python bench/revocation.py && \
	$(BIN)/python bench/refusals.py

services-start:
	$(SERVICES) start

services-stop:
	$(SERVICES) stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
