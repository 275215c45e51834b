# The two commands of the README: `make run` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PHOENIX_VENV := .venv-phoenix
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
# llama.cpp is compiled from source. A portable AVX2 build: the native build also emits AMX
# instructions, which crash (general protection fault) on kernels/VMs that do not enable AMX.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF;-DGGML_AVX=ON;-DGGML_AVX2=ON;-DGGML_FMA=ON;-DGGML_F16C=ON;-DLLAMA_BUILD_TESTS=OFF;-DLLAMA_BUILD_EXAMPLES=OFF
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: run test demo install lock clean

run: install
	$(VENV)/bin/cogniverse run

# ruff first: a lint or format finding fails the test command (and so CI) before the slow suite.
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest

demo: install
	$(VENV)/bin/cogniverse demo

install: $(VENV)/.installed $(PHOENIX_VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(VENV)/bin/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV) pip sync --python $(VENV)/bin/python -C cmake.args="$(LLAMA_CMAKE_ARGS)" requirements.lock
	$(UV) pip install --python $(VENV)/bin/python --no-deps -e .
	touch $@

# The Phoenix server has its own environment: its graphql-core>=3.3 conflicts with dagster-webserver.
$(PHOENIX_VENV)/.installed: requirements-phoenix.lock $(VENV)/.installed
	test -x $(PHOENIX_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(PHOENIX_VENV)
	$(UV) pip sync --python $(PHOENIX_VENV)/bin/python requirements-phoenix.lock
	touch $@

lock:
	$(UV) pip compile pyproject.toml --extra local-lm --extra test --extra tools --python-version 3.11 -o requirements.lock
	$(UV) pip compile phoenix-server.in --python-version 3.11 -o requirements-phoenix.lock

clean:
	-$(VENV)/bin/cogniverse stack down
	rm -rf $(VENV) $(PHOENIX_VENV) .cogniverse
