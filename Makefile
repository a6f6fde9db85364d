# Two commands do all set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

demo: $(VENV)/.stamp-demo
	$(BIN)/glmtts demo

test: $(VENV)/.stamp-test
	$(BIN)/ruff check glmtts_plugins adapters examples tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.stamp-test  # mypy checks what [tool.mypy] in pyproject.toml lists
	$(BIN)/ruff check glmtts_plugins adapters examples tests bench
	$(BIN)/ruff format --check glmtts_plugins adapters examples tests bench
	$(BIN)/mypy

bench: $(VENV)/.stamp-test  # every benchmark; each also runs alone with `.venv/bin/python -m bench.NAME`
	$(BIN)/python -m bench.client_overhead
	$(BIN)/python -m bench.resampler
	$(BIN)/python -m bench.g711
	$(BIN)/python -m bench.segmenter
	$(BIN)/python -m bench.speech
	$(BIN)/python -m bench.pipecat_tts
	$(BIN)/python -m bench.livekit_tts
	$(BIN)/python -m bench.capacity
	$(BIN)/python -m bench.soak --minutes 3 --faults
	$(BIN)/python -m bench.xiaozhi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.stamp-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[server]'
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,server,pipecat,livekit,examples]'
	touch $@ $(VENV)/.stamp-demo

clean:
	rm -rf $(VENV) out dist build
