# The one front door. `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
HELM   ?= $(CURDIR)/.cache/bin/helm
# checkov pins ~80 packages (packaging<24, boto3, numpy...) that would downgrade the dev tools: its own venv.
CHECKOV_VERSION ?= 3.3.30
CHECKOV ?= $(CURDIR)/.cache/bin/checkov
export JOULELEDGER_HELM := $(HELM)
# pytest-xdist: one worker per core (at most 4), each test file whole in one worker (its module fixtures start once).
PYTEST_PARALLEL ?= -n auto --maxprocesses 4 --dist loadfile

.PHONY: install demo test test-fast lint format typecheck bench bench-peers chart manifests manifests-check helm checkov controlplane proto clean

$(BIN)/jouleledger: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/jouleledger ## create .venv and install the package with its dev tools

demo: install ## run the agent on a simulated GPU node and print the footprint table
	$(BIN)/jouleledger demo

helm: $(HELM) ## fetch the helm v4 binary into .cache/bin
$(HELM):
	tools/fetch-helm.sh $(HELM)

checkov: $(CHECKOV) ## install checkov (the chart's security scanner) in its own venv under .cache
$(CHECKOV):
	$(PYTHON) -m venv $(CURDIR)/.cache/checkov
	$(CURDIR)/.cache/checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	mkdir -p $(dir $(CHECKOV))
	ln -sf $(CURDIR)/.cache/checkov/bin/checkov $(CHECKOV)

controlplane: ## build kube-apiserver, kube-controller-manager, kubectl and etcd from Go modules (needs Go; cached)
	tools/build-controlplane.sh

test: lint typecheck helm checkov controlplane ## lint, type-check and run every test with coverage (helm and promtool: see .ci/run)
	$(PY) -m pytest $(PYTEST_PARALLEL) --cov --cov-report=term
	$(BIN)/coverage report --include='operator/jouleledger/core/*' --fail-under=95

test-fast: install ## unit tests only (no real servers, helm or prometheus)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow"

lint: install ## ruff, ruff format --check and the import layering (import-linter)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix operator tests bench
	$(BIN)/ruff format operator tests bench

typecheck: install
	$(BIN)/mypy

bench: install bench-peers ## print the agent, NVML read and operator benchmark figures
	$(PY) -m bench.agent_tick
	$(PY) -m bench.nvml_read
	$(PY) -m bench.operator_load --scrape-interval-s 15 --duration-s 120 --warmup-s 90
	$(PY) -m bench.operator_pass
	$(PY) -m bench.agent_requests
	$(PY) -m bench.operator_metrics

# CodeCarbon and Zeus, only for bench.nvml_read's side-by-side figures: installed without their dependencies into
# .cache (never part of the package); offline, the benchmark reproduces their read pattern and says so.
bench-peers: install
	-$(PY) -m pip install --quiet --no-deps --target .cache/bench-peers codecarbon zeus

chart: install helm ## lint and render the Helm chart
	$(HELM) lint --strict charts/jouleledger
	$(HELM) template jouleledger charts/jouleledger --namespace jouleledger >/dev/null

manifests: install helm ## re-render manifests/ from the chart
	$(PY) tools/render_manifests.py --helm $(HELM) --write

manifests-check: install helm ## fail if manifests/ drifted from the chart
	$(PY) tools/render_manifests.py --helm $(HELM) --check

proto: install ## regenerate the kubelet PodResources gRPC stubs
	$(PY) tools/gen_podresources.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage htmlcov build dist
