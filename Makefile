# The two commands a newcomer needs: `make demo` (the offline budget demo) and `make test` (the whole suite).
# Both create .venv and install the package with every framework extra on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test lint typecheck bench  ## (each target is described below)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[all,dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv with the package, all framework extras and the dev tools

demo: $(STAMP)  ## run the offline demo on the embedded authority and the scripted model
	$(VENV)/bin/otel-cycles demo

lint: $(STAMP)  ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)  ## mypy --strict
	$(VENV)/bin/mypy

test: lint typecheck  ## lint, type-check and run the whole test suite
	$(PY) -m pytest

bench: $(STAMP)  ## run the benchmarks and rewrite BENCHMARKS.md
	$(PY) -m benchmarks
