# Two entry points (see README): `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= ../shared/data
INDEX  ?= .glb/sample-index
PORT   ?= 8501
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo test lint install sample-index ui browser bench train train-gpu train-loo-ucm train-v1 ablations clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,train]'
	touch $(STAMP)

# The map's browser libraries (Leaflet, Leaflet.draw, ...), fetched once from the npm registry
# with the versions and checksums pinned in ui/assets.py; the UI then needs no network.
UI_ASSETS = ui/static/vendor/packages.json
$(UI_ASSETS): ui/assets.py | $(STAMP)
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq npm >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq npm >/dev/null; fi; }
	$(BIN)/python -m ui.assets && touch $(UI_ASSETS)

install: $(STAMP) $(UI_ASSETS)

sample-index: install
	$(BIN)/glb index $(DATA)/scenes $(DATA)/harvey/test $(DATA)/eurosat_ms/test \
	    $(DATA)/sen1floods11 --rules indexer/archives/sample.toml --index $(INDEX)

ui: install
	$(BIN)/glb ui --index $(INDEX) --port $(PORT)

# The main job: environment, sample index (incremental: seconds when already built), search UI.
demo: sample-index ui

# Debian's chromium for the real-browser UI test (Playwright drives it; nothing is downloaded).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

# Static checks (config in pyproject.toml): ruff over the repository, mypy over engine/.
lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

test: install browser lint
	GLB_DATA=$(DATA) $(BIN)/python -m pytest -q

# Encoder v2 (glb-effnet-l0, the default; docs/MODEL_CARD.md): `train`
# on the CPU, resumable with --resume; `train-gpu` the larger recipe on one GPU; `train-loo-ucm` the leave-UCM-out run.
# `train-v1` is the v1 (glb-vit-s8) recipe, its ablations and leave-Harvey-out run below.
# Tables land in runs/<name>/eval/.
train: install
	$(BIN)/glb train --config training/configs/v2-cpu-d.json --resume

train-gpu: install
	$(BIN)/glb train --config training/configs/v2-gpu.json --resume

train-loo-ucm: install
	$(BIN)/glb train --config training/configs/v2-loo-ucm-d.json --resume

train-v1: install
	$(BIN)/glb train --config training/configs/cpu-default.json

ABLATIONS = ablation-full ablation-no-maka ablation-fixed-stems ablation-no-merge loo-harvey ablation-pairs
ablations: install
	for c in $(ABLATIONS); do $(BIN)/glb train --config training/configs/$$c.json || exit 1; done

bench: install
	$(BIN)/glb bench all --write docs/BENCHMARKS.md

clean:
	rm -rf .glb .pytest_cache
