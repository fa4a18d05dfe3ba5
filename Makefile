# The two commands a newcomer needs (README): `make demo` and `make test`. Both install what they need.
PY ?= python3
SEED ?= examples/seed

.PHONY: setup demo offline-demo down test unit functional lab bench lint kubernetes

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh $(SEED)

offline-demo: setup
	@bash scripts/offline-demo.sh $(SEED)

down:
	pyantrea lab down

# the Kubernetes-mode tests need kube-apiserver & co.: built once into a cache outside the checkout
test: setup kubernetes
	$(PY) -m pytest -q -ra

unit: setup
	$(PY) -m pytest -q tests/unit

functional: setup
	$(PY) -m pytest -q tests/functional

lab: setup
	$(PY) -m pytest -q -ra tests/lab

bench: setup
	$(PY) bench/compile.py
	$(PY) bench/trace.py
	$(PY) bench/lab.py

lint: setup
	$(PY) -m mypy src/pyantrea
	$(PY) -m ruff check src tests bench

kubernetes:
	@bash scripts/build-kubernetes.sh
