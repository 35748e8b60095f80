# `make run` starts the dashboard, `make test` runs lint and the tests; both set up .venv first if needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TFF := tensorflow-federated==0.87.0
PORT ?= 8501

.PHONY: run serve-class test lint bench demo-runs lessons browser jemalloc shim clean

# One user on this machine: the app listens on loopback only, and every run may be stopped, renamed or deleted.
run: $(STAMP) jemalloc shim
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.address 127.0.0.1

# A room shares one server: every interface; students sign in and change only their own runs (docs/security.md).
serve-class: $(STAMP) jemalloc shim
	FEDLAB_SHARED=1 $(BIN)/streamlit run app.py --server.port $(PORT) --server.address 0.0.0.0

# pytest's settings (test paths, timeout, markers) and ruff's are in pyproject.toml. Three pytest workers on the two
# cores (many tests wait on a server or a subprocess), one test file each at a time, so module fixtures are built
# once; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 3
test: lint browser jemalloc shim
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP) jemalloc shim
	$(BIN)/python -m fedlab bench

# Trains the dashboard's two demo runs into its store (runs/fedlab.db, or FEDLAB_DB) unless already there.
demo-runs: $(STAMP) shim
	$(BIN)/python -m fedlab demo

# Trains every lesson run of the Lessons page into the same store ahead of class, skipping those already there.
lessons: $(STAMP) jemalloc shim
	$(BIN)/python -m fedlab lessons --prepare

# Reinstalls only when requirements.txt or pyproject.toml is newer than the last install.
$(STAMP): requirements.txt pyproject.toml
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
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The browser test needs Debian's chromium; install it when we may (root with apt), else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium; the browser test will be skipped"; \
	  else echo "chromium not found; the browser test will be skipped (apt-get install chromium)"; fi; }

# TFF's worker runs about a third faster on jemalloc (fedlab/learning/runtime.py preloads it when installed).
jemalloc:
	@ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 2>/dev/null | grep -q . || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null 2>&1 \
	      || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null)) \
	      || echo "could not install libjemalloc2; TFF's worker uses the system allocator (slower)"; \
	  else echo "libjemalloc2 not found; TFF's worker uses the system allocator (apt-get install libjemalloc2 is faster)"; fi; }

# Keeps TFF's worker on loopback and ties it to its parent (fedlab/learning/native/worker_shim.c, docs/security.md).
# Without it a local federated run refuses to start (unless FEDLAB_ALLOW_OPEN_WORKER=1).
SHIM := fedlab/learning/native/libfedlab_worker.so
shim: $(SHIM)

$(SHIM): fedlab/learning/native/worker_shim.c
	@command -v $(CC) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null 2>&1 \
	      || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null)) \
	      || echo "could not install gcc"; fi; }
	@if command -v $(CC) >/dev/null 2>&1; then $(CC) -shared -fPIC -O2 -Wall -o $@ $< -ldl; \
	  else echo "no C compiler ($(CC)) to build $@: federated runs will refuse to start (apt-get install gcc, then make shim)"; fi

clean:
	rm -rf $(VENV) .pytest_cache
