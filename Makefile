# Two entry points (README): `make demo` and `make test`. Each sets up the
# virtual environment .venv inside the repository when it is missing or stale,
# installing under constraints.txt (torch pinned to the CPU build 2.13.0).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,experiments,docs
# the [peers] extra of pyproject.toml, installed without their own requirements (see there)
PEERS := backpack-for-pytorch==1.7.1 unfoldNd einops curvlinops-for-pytorch==3.0.1 einconv linear-operator opt-einsum

.PHONY: demo test venv lint derivations bench bench-arch docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip -c constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(PY) -m pip install -q --no-deps -c constraints.txt $(PEERS)
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fishersym demo

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

# Static checks (ruff, mypy; configured in pyproject.toml), with the versions pinned in the [lint] extra.
LINT_STAMP := $(VENV)/.installed-lint
$(LINT_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)
	$(PY) -m ruff check fishersym tests benchmarks examples tools
	$(PY) -m mypy

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

derivations: $(STAMP)
	$(VENV)/bin/fishersym derive --catalogue derivations

bench: $(STAMP)
	$(PY) benchmarks/bench_mlp.py --threads 1

bench-arch: $(STAMP)
	$(PY) benchmarks/bench_architectures.py resnet18 --batch 2 --repeats 3
	$(PY) benchmarks/bench_architectures.py lenet5 --batch 8
	$(PY) benchmarks/bench_architectures.py transformer --batch 2

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
