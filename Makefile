# gpusizer: `make bench` measures this machine and builds the report; `make test` runs the test suite.
PYTHON     ?= python3
VENV       ?= .venv
VPY        := $(VENV)/bin/python
# Installed only when the environment has no torch at all: a preinstalled (e.g. CUDA) torch is kept.
TORCH_SPEC ?= torch==2.13.0
BENCH_ARGS ?=
REPORT_DIR ?= reports-out
RESULTS_DIR ?= results

.PHONY: setup bench report test horovod gpu-check compare-peers harness-overhead check-floors clean

setup: $(VENV)/.installed

# The newest allowed release of each dependency, even where the system Python has older ones; a torch
# already there (a cloud image's CUDA build, seen through --system-site-packages) is kept.
$(VENV)/.installed: pyproject.toml scripts/setup-venv.sh scripts/project_deps.py
	PYTHON=$(PYTHON) VENV=$(VENV) TORCH_SPEC="$(TORCH_SPEC)" bash scripts/setup-venv.sh
	touch $@

# The report is built from the file this run wrote (newer than a stamp taken before it), never from
# an older run's: a usage error or --benchmark-json in BENCH_ARGS writes none here, so no report.
bench: setup
	@mkdir -p $(RESULTS_DIR); stamp=$$(mktemp $(RESULTS_DIR)/.bench-start.XXXXXX); status=0; \
	$(VPY) -m pytest bench/ --results-dir $(RESULTS_DIR) $(BENCH_ARGS) || status=$$?; \
	latest=$$(find $(RESULTS_DIR) -maxdepth 1 -name '*.json' -newer "$$stamp" | sort | tail -n 1); rm -f "$$stamp"; \
	if [ -n "$$latest" ]; then \
	  $(VPY) -m reports report "$$latest" -o $(REPORT_DIR)/$$(basename "$$latest" .json).html || status=$$?; \
	else echo "make bench: this run wrote no result file in $(RESULTS_DIR)/, so no report"; fi; exit $$status

report: setup
	$(VPY) -m reports report $(RESULTS_DIR) -o $(REPORT_DIR)/all-results.html --force

horovod: setup
	PYTHON=$(VPY) bash scripts/install-horovod.sh

test: setup horovod
	$(VPY) -m pytest tests/

# The GPU check (prerequisites, every strategy at world size 1 and 2, OOM, memory release; docs/telemetry.md).
gpu-check: setup
	PYTHON=$(VPY) bash scripts/gpu-check.sh

# The harness adds nothing: suite vs standalone torchrun+DDP and horovodrun peers, alternated.
compare-peers: setup horovod
	$(VPY) scripts/compare-peers.py --world-size 2 --preset small --repeats 3

# The harness adds nothing: suite single vs the seed's plain loop (and ddp-1 vs DDP at 1), tiny, small, medium, alternated.
harness-overhead: setup
	$(VPY) scripts/measure-harness-overhead.py --presets tiny,small,medium --pairs 5

# Every declared range at its floor (its own venv, .venv-floor): a --quick benchmark, report, compare
# and the unit tests that need no launcher. FLOOR_TORCH_SPEC picks the torch (default: TORCH_SPEC).
check-floors:
	PYTHON=$(PYTHON) TORCH_SPEC="$(or $(FLOOR_TORCH_SPEC),$(TORCH_SPEC))" bash scripts/check-stack.sh

clean:
	rm -rf $(VENV) .venv-floor build *.egg-info
