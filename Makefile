# The two README commands: `make reproduce` (set-up + the study) and `make test` (set-up + the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NORMLAB := $(BIN)/normlab

.PHONY: setup data browser reproduce test fuzz clean docs

$(NORMLAB): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m normlab.engine.build
	touch $@

setup: $(NORMLAB)

# Found locally, else (as root on Debian) the dataset-fashion-mnist package, else `normlab data` downloads it.
data: setup
	@$(NORMLAB) data --no-download >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }; }; } || true
	$(NORMLAB) data

# Headless Chromium for the HTML report test (Debian's package, as root); without it that one test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; }; } || \
	  echo "chromium not installed: the HTML report browser test will be skipped"

reproduce: data
	$(NORMLAB) reproduce

# One pytest worker per core (at most 4: each may start training processes of its own); a file's tests stay on one
# worker, so the fixtures a file shares (a trained run, a diagnosis) are made once; the longest files go first.
test: data browser
	$(BIN)/pytest -q -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder

# docs/api.md, the API reference, from the docstrings (tests/test_api_reference.py fails while it is stale).
docs: setup
	$(BIN)/python -m normlab.api.reference > docs/api.md.tmp && mv docs/api.md.tmp docs/api.md

clean:
	rm -rf $(VENV) src/*.egg-info .pytest_cache .hypothesis

# Property-based fuzzing (IDX reader, checkpoint files and records, study files, results.json) with 10,000
# examples each, and SIGINT/SIGTERM at every moment of a run 10 times each (CI: 1,000 examples, once).
fuzz: data
	NORMLAB_FUZZ_EXAMPLES=10000 NORMLAB_SIGNAL_REPS=10 $(BIN)/pytest -q -m fuzz
