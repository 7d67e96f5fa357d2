# The course's two commands (see README.md):
#   make course   set up .venv and open the lessons in JupyterLab
#   make test     set up .venv and run every test: chatlib, every notebook, the browser
# Both are safe to run again; .venv is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: course test notebooks bench clean

# JupyterLab refuses to run as root unless told; containers often run as root.
AS_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

course: $(READY)
	$(BIN)/jupyter lab $(AS_ROOT) notebooks/00-start-here.ipynb

test: $(READY)
	$(BIN)/python -m pytest

# Re-run every lesson and store its checked outputs in the committed, clean form.
notebooks: $(READY)
	$(BIN)/python tools/nbclean.py --execute notebooks/*.ipynb

bench: $(READY)
	$(BIN)/python -m chatlib.bench

$(READY): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "The course needs Python 3.11 or newer; this is " + sys.version.split()[0] + ". Try: make PYTHON=python3.12 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[course,test]'
	@touch $(READY)

clean:
	rm -rf $(VENV) test-artifacts
