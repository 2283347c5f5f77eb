# Set-up in two commands (see README):  `make demo`  and  `make test`.
# Both create the virtualenv in .venv/ on first use (plain venv + pip: the pinned torch wheels
# install from this machine's disk) and build the amanet._C op library.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
CSRC   := $(shell find csrc/ops -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh')

.PHONY: demo test build clean cpp-deps

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

# The C++ runtime (CMakeLists.txt; tests/test_cpp.py builds and tests it) needs OpenCV's C++
# library and nlohmann-json, and tests/test_gpu_check.py lints tools/gpu_check.sh with
# shellcheck: installed from Debian where missing (root here and in CI; `apt-get update` only if
# the package list does not know them yet).
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends
CPP_PACKAGES := libopencv-dev nlohmann-json3-dev shellcheck
cpp-deps:
	@{ pkg-config --exists opencv4 2>/dev/null && test -f /usr/include/nlohmann/json.hpp \
	   && command -v shellcheck >/dev/null; } || { \
	  $(APT_INSTALL) $(CPP_PACKAGES) || { apt-get update && $(APT_INSTALL) $(CPP_PACKAGES); }; }

# `amanet doctor` first: the log then says what the machine and the install can do.
test: build cpp-deps
	$(VENV)/bin/amanet doctor
	$(PY) -m pytest tests -q -rs

clean:
	rm -rf build amanet/_C*.so amanet/_C.stamp *.egg-info
