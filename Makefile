# The two commands a newcomer needs (README): `make demo` and `make test`. Both install what they need.
PY ?= python3
SEED ?= examples/seed

.PHONY: setup demo test unit functional lab bench lint

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh $(SEED)

test: setup
	$(PY) -m pytest -q -ra

unit: setup
	$(PY) -m pytest -q tests/unit

functional: setup
	$(PY) -m pytest -q tests/functional

bench: setup
	$(PY) bench/compile.py

lint: setup
	$(PY) -m mypy src/pyantrea
	$(PY) -m ruff check src tests bench
