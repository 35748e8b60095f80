# `make run` starts the dashboard, `make test` runs the tests; both set up .venv first if needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TFF := tensorflow-federated==0.87.0
PORT ?= 8501

.PHONY: run test bench demo-runs browser jemalloc clean

run: $(STAMP) jemalloc
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: $(STAMP) browser jemalloc
	$(BIN)/python -m pytest -q --timeout 900

bench: $(STAMP) jemalloc
	$(BIN)/python -m fedlab bench

# Trains the dashboard's two demo runs into its store (runs/fedlab.db, or FEDLAB_DB) unless already there.
demo-runs: $(STAMP)
	$(BIN)/python -m fedlab demo

# Reinstalls only when requirements.txt is newer than the last install.
$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "fedlab needs Python 3.11, and '$(PYTHON)' was not found."; \
	  echo "Install Python 3.11 (for example 'pyenv install 3.11'), or run: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)"; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
	  echo "'$(PYTHON)' is not Python 3.11; run: make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps $(TFF)
	touch $(STAMP)

# The browser test needs Debian's chromium; install it when we may (root with apt), else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium; the browser test will be skipped"; \
	  else echo "chromium not found; the browser test will be skipped (apt-get install chromium)"; fi; }

# TFF's worker runs about a third faster on jemalloc (fedlab/runtime.py preloads it when installed).
jemalloc:
	@ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 2>/dev/null | grep -q . || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 \
	      || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null)) \
	      || echo "could not install libjemalloc2; TFF's worker uses the system allocator (slower)"; \
	  else echo "libjemalloc2 not found; TFF's worker uses the system allocator (apt-get install libjemalloc2 is faster)"; fi; }

clean:
	rm -rf $(VENV) .pytest_cache
