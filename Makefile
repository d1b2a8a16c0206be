# Two entry points (see README): `make demo` and `make test`. Both set up everything they need.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench deb system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

# Debian packages the tests drive for real (mosquitto broker, socat pseudo-terminals).
system-deps:
	@./scripts/install-system-deps

demo: $(STAMP)
	$(PY) -m simulator.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Most tests wait on brokers, databases and agents rather than compute, so three workers on
# two cores halve the wall time; --dist loadfile keeps each file's fixtures in one worker.
TEST_WORKERS ?= 3

test: system-deps $(STAMP) lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) -m bench

# The gateway's Debian package (dist/homewatt_<version>_<arch>.deb); see packaging/README.md.
deb: $(STAMP)
	$(PY) packaging/build_deb.py --out dist

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
