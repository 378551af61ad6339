# Two commands a new user needs: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install.stamp
# One heavy job at a time on 2 cores: keep BLAS/OpenMP from oversubscribing.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

DEMO := outputs/demo
DEMO_AOI := L15-0357E-1223N_1429_3296_13

.PHONY: install demo test lint format bench tensorboard clean

# Re-runs only when pyproject.toml changes. torch is pinned here (the CPU wheel on this
# machine's disk); an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[dev,optuna,infer]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) prepare.py
	$(PY) train.py experiment=demo hydra.run.dir=$(DEMO)/train
	$(PY) evaluate.py ckpt_path=$(DEMO)/train/checkpoints/best.ckpt hydra.run.dir=$(DEMO)/evaluate
	$(PY) predict.py ckpt_path=$(DEMO)/train/checkpoints/best.ckpt \
		input=data/sample/train/$(DEMO_AOI)/images hydra.run.dir=$(DEMO)/predict
	@echo
	@echo "Demo finished. Results:"
	@echo "  checkpoints + TensorBoard logs: $(DEMO)/train   (make tensorboard)"
	@echo "  full-tile metrics:              $(DEMO)/evaluate/metrics.md"
	@echo "  GeoTIFF/GeoJSON predictions:    $(DEMO)/predict   (gallery: $(DEMO)/predict/gallery/index.png)"

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m benchmarks.run_all

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs --bind_all

clean:
	rm -rf outputs multirun .pytest_cache
