# The two commands: `make book` (PROFILE=cpu|paper|smoke) and `make test`. Both set up from a fresh clone.
PROFILE ?= cpu
TEST_WORKERS ?= 2
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: book html notebooks test data bench gpu-check clean

book: notebooks html

html: $(STAMP)  # the pages only, from the notebooks already executed (make notebooks / book/build.py)
	$(VENV)/bin/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

notebooks: data
	$(PY) book/build.py --profile $(PROFILE)

test: data  # TEST_WORKERS pytest workers, one thread each (tests/conftest.py), a test file per worker at a time
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: data  # the paper's MNIST protocol, official-code style vs the engine (see NOTES.md)
	$(PY) -m benchmarks.speed --epochs 3 --n-train 10000 --runs 2

gpu-check: $(STAMP)  # every CUDA path once, offline: PASS/FAIL/SKIP per check, seconds per epoch (README, "cluster")
	$(PY) -m benchmarks.gpu_check

data: $(STAMP)
	$(PY) -m idnhelpers.datasets mnist

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	$(PY) -m ipykernel install --sys-prefix --name idnhelpers --display-name "Python (idnhelpers)"
	touch $(STAMP)

clean:
	rm -rf _build notebooks/*.ipynb book/status.md book/summary.md
