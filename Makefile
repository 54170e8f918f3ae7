# Set-up installs the CPU build of torch first, so pip never pulls the CUDA wheels on a CPU machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: setup browser demo test test-all bench bench-peers-setup example clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

setup: $(PY)
	@# A CUDA machine can set TORCH_SPEC/TORCH_INDEX; on a CPU machine the default installs the CPU build.
	$(PY) -m pip install -q $(TORCH_SPEC) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps -e examples/infovae-energy-distance

# The report's browser test needs Debian's chromium: installed when missing (as root, as in CI).
# Without root the test skips locally and fails under CI=true.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ]; then echo "installing chromium (the report's browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and this is not root: the browser test will skip (sudo apt-get install chromium)"; fi

demo: setup
	$(VENV)/bin/infovae train --out runs/demo --overwrite --track mutual-information,nll
	$(VENV)/bin/infovae sample runs/demo --out runs/demo/samples/ancestral.png
	$(VENV)/bin/infovae sample runs/demo --sampler markov-chain -o markov-chain.return_chain=true -n 8 --out runs/demo/samples/markov_chain.png
	$(VENV)/bin/infovae evaluate runs/demo --metrics reconstruction,kl,nll,mmd-prior,logdet-cov,mutual-information,active-units,semi-supervised
	$(VENV)/bin/infovae report runs/demo --out runs/demo/report.html

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)
	cd examples/infovae-energy-distance && ../../$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/regularizers.py
	$(PY) benchmarks/decoders.py

# Benchmark-only peer (benchmarks/peers_training.py): pythae 0.1.2 with --no-deps, so its requirements
# never replace the CPU torch, plus the packages it imports; matplotlib for benchmarks/training_gflops.py.
bench-peers-setup: setup
	$(PY) -m pip install -q pydantic cloudpickle imageio scipy tqdm typing-extensions matplotlib
	$(PY) -m pip install -q --no-deps pythae==0.1.2
	$(PY) -c "import torch, pythae; assert torch.__version__.split('+')[0] == '2.13.0', 'pythae set-up replaced torch: ' + torch.__version__"

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache runs
