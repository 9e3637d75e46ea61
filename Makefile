# naslung: two commands for a fresh machine.
#   make demo   create .venv, install, run the main job on the embedded LIDC phantom
#   make test   create .venv, install, run the whole test suite
#   make test-fast   the tests not marked slow (the edit loop)
# CPU machines get the pinned CPU torch wheel; a CUDA user overrides TORCH_SPEC, e.g.
#   make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.naslung-installed

.PHONY: venv demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip" "setuptools<81" wheel
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,onnx,openvino]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/naslung demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py --isa both
	$(BIN)/python benchmarks/inference.py --isa both
	$(BIN)/python benchmarks/engines.py --isa native

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
