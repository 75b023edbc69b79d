# distgan: the two commands of the README, and a few more.
#   make train   trains jobs/quickstart.yaml on the embedded dataset (creates .venv first)
#   make test    runs the test suite (creates .venv first)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
JOB     ?= jobs/quickstart.yaml
# Fashion-MNIST's IDX files: Debian's dataset-fashion-mnist, or the copy beside this checkout.
FASHION ?= $(firstword $(wildcard /usr/share/datasets/fashion-mnist ../shared/datasets/fashion-mnist))

.PHONY: train test lint bench fashion-mnist clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# constraints.txt pins torch to 2.13.0 (the local CPU build where one is provided) and Ray to 2.60.0
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'
	# Byte-compiled on every core (pip compiles on one); one torch file is Python 3.12 only.
	$(BIN)/python -m compileall -q -j 0 -x py312_intrinsics $(VENV)/lib > /dev/null
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/distgan train $(JOB)

# Two pytest workers, each with its own Ray head (tests/conftest.py: Ray tests are mostly
# process start-up, which leaves a core idle a third of the time).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check distgan tests benchmarks
	$(BIN)/ruff format --check distgan tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

fashion-mnist: $(STAMP)
	$(BIN)/distgan data import $(FASHION)/train-images-idx3-ubyte.gz \
	    --labels $(FASHION)/train-labels-idx1-ubyte.gz --out data/fashion-mnist

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
