# Set-up in two commands (see README):  `make demo`  and  `make test`.
# Both create the virtualenv in .venv/ on first use (plain venv + pip: the pinned torch wheels
# install from this machine's disk) and build the amanet._C op library.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
CSRC   := $(shell find csrc/ops -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh')

.PHONY: demo test build clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip setuptools wheel
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

amanet/_C.stamp: $(STAMP) setup.py $(CSRC)
	flock /tmp/amanet-build.lock $(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

build: amanet/_C.stamp

demo: build
	$(VENV)/bin/amanet predict --demo --out demo_out

test: build
	$(PY) -m pytest tests -q -rs

clean:
	rm -rf build amanet/_C*.so amanet/_C.stamp *.egg-info
