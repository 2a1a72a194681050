# Two commands for a fresh machine:  `make run`  (install + start the app)  and  `make test`.
# Everything installs into ./.venv (the library itself with `pip install -e .`, so tests and scripts import
# the checkout); a stamp file skips pip when the requirements and pyproject.toml did not change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: run test install install-dev chromium lint bench train-embedded clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.runtime-$(REQ_HASH): | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.dev-$(REQ_HASH): $(VENV)/.runtime-$(REQ_HASH)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.runtime-$(REQ_HASH)
install-dev: $(VENV)/.dev-$(REQ_HASH)

## make run: install and start the explorer on the embedded backbone (http://localhost:$(PORT))
run: install
	$(PY) -m streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

## make test: install everything (incl. Debian's chromium for the browser test) and run all tests
test: install-dev chromium
	$(PY) -m pytest

# Debian's chromium for the browser test (Playwright's own browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium; the browser test will be skipped"

lint: install-dev
	$(PY) -m ruff check snapvit_core app_pages ui app.py tests benchmarks scripts

bench: install-dev chromium
	$(PY) benchmarks/run_all.py --quick

train-embedded: install
	$(PY) scripts/train_embedded.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
