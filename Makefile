# Two commands for a fresh machine:  make lab  (set up and reproduce)  ·  make test  (set up and test)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take the CPU build of torch; machines with an NVIDIA driver take a CUDA build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.4$(comma)<2.15,torch==2.13.0)
comma := ,
PROFILE ?=
# pytest-xdist workers for `make test` (TEST_WORKERS=3: more than the cores, since many tests wait on the servers
# they start; a file, or a group of files, tests/scheduling.py, runs whole on one worker). The default stays one
# process until a 3-worker run of the whole suite passes on a fresh clone with nothing else on the machine.
TEST_WORKERS ?= 0

.PHONY: lab test venv clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

lab: venv
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/lab reproduce $(if $(PROFILE),--profile $(PROFILE),)
	MLFLOW_DISABLE_TELEMETRY=true $(VENV)/bin/lab report
	@echo
	@echo "Results:  runs/report/index.html (and index.md): your runs; the committed reports/index.html holds the reference records"
	@echo "MLflow:   $(VENV)/bin/lab ui   then open http://127.0.0.1:5000"
	@echo "Notebooks: $(VENV)/bin/lab notebooks   (JupyterLab on 127.0.0.1:8888; --allow-root added as root)"

test: venv
	MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup,)

clean:
	rm -rf $(VENV) runs
