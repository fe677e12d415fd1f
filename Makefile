# make setup: .venv with torch (CPU build) and nlpcompress; every other target calls it (idempotent).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
GLUE_DIR ?= $(abspath ../shared/data/glue)
export NLPCOMPRESS_GLUE_DIR ?= $(GLUE_DIR)
export HF_HUB_OFFLINE ?= 1
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test lint format

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,offline,plots,onnx,openvino,search]"
	touch $@

# The README's main job: fine-tune the offline MiniLM on SST-2, compress and deploy it (recipes/demo.yaml),
# then time what is deployed against the fine-tuned baseline, alternating in one process.
demo: setup
	$(BIN)/nlpcompress run recipes/baseline.yaml --output-dir out/demo-baseline --no-progress --overwrite
	$(BIN)/nlpcompress run recipes/demo.yaml --no-progress --overwrite
	$(BIN)/nlpcompress bench out/demo --backend onnxruntime-int8 --baseline out/demo-baseline

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
