# distgan: the two commands of the README, and a few more.
#   make train   trains jobs/quickstart.yaml on the embedded dataset (creates .venv first);
#                make train JOB=jobs/seed_mlp_gan.yaml trains another job
#   make tune    searches jobs/tune_quickstart.yaml (SEARCH=jobs/... for another search)
#   make test    runs the test suite (creates .venv first)
#   make fashion-mnist   imports Fashion-MNIST's IDX files into data/fashion-mnist (60,000
#                training images) and data/fashion-mnist-test (10,000 test images)
#   make judge-b   trains the second judge's shipped weights (distgan/metrics/weights/
#                fashion-mnist-b.pt: a strided CNN on the first 30,000 training images, seed 1)
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
JOB     ?= jobs/quickstart.yaml
SEARCH  ?= jobs/tune_quickstart.yaml
# Fashion-MNIST's IDX files: Debian's dataset-fashion-mnist, or the copy beside this checkout;
# FASHION=DIR names any folder that holds the four files.
FASHION ?= $(firstword $(wildcard /usr/share/datasets/fashion-mnist ../shared/datasets/fashion-mnist))

.PHONY: train tune test lint bench fashion-mnist judge-b photos clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# constraints.txt pins torch to 2.13.0 (the local CPU build where one is provided) and Ray to 2.60.0
	$(BIN)/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'
	# Byte-compiled on every core (pip compiles on one); one torch file is Python 3.12 only.
	$(BIN)/python -m compileall -q -j 0 -x py312_intrinsics $(VENV)/lib > /dev/null
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/distgan train $(JOB)

tune: $(STAMP)
	$(BIN)/distgan tune $(SEARCH)

# Two pytest workers, the Ray tests split between them in two groups (tests/conftest.py).
# distgan's own modules are byte-compiled first: where PYTHONDONTWRITEBYTECODE is set, each of
# the suite's processes that imports distgan (about 150: Ray workers, drivers, CLI runs) would
# compile them again.
test: $(STAMP)
	$(BIN)/python -m compileall -q -j 0 distgan
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check distgan tests benchmarks
	$(BIN)/ruff format --check distgan tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py

fashion-mnist: $(STAMP)
	@test -n "$(FASHION)" || { echo "no Fashion-MNIST IDX files: install Debian's" \
	    "dataset-fashion-mnist or pass FASHION=DIR (a folder holding the four files)" >&2; exit 2; }
	$(BIN)/distgan data import $(FASHION)/train-images-idx3-ubyte.gz \
	    --labels $(FASHION)/train-labels-idx1-ubyte.gz --out data/fashion-mnist
	$(BIN)/distgan data import $(FASHION)/t10k-images-idx3-ubyte.gz \
	    --labels $(FASHION)/t10k-labels-idx1-ubyte.gz --out data/fashion-mnist-test

# About two minutes on two CPU cores; BENCHMARKS.md, "Feature networks", gives its figures.
judge-b: fashion-mnist
	$(BIN)/distgan data import $(FASHION)/train-images-idx3-ubyte.gz \
	    --labels $(FASHION)/train-labels-idx1-ubyte.gz --limit 30000 --out data/fashion-mnist-30k
	$(BIN)/distgan eval fit-features data/fashion-mnist-30k --test data/fashion-mnist-test \
	    --arch strided-cnn --seed 1 --epochs 25 --out distgan/metrics/weights/fashion-mnist-b.pt

# 2,000 RGB JPEGs of mixed sizes in two class subfolders, from the embedded images
# (jobs/stylegan2_folder.yaml reads them as they are, no import).
photos: $(STAMP)
	$(BIN)/python benchmarks/photo_folder.py --out data/photos

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
