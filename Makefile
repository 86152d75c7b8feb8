# Quick start: `make run` (set up + open the app on a bundled sample), `make test`.
#
# Python 3.12 is preferred: with Python 3.11, the PySide6 6.12 wheels drop a reference to
# None on every void Qt call, and a long GUI session aborts ("none_dealloc"); 3.12 makes
# None immortal. PYTHON can be overridden: `make test PYTHON=/path/to/python3.12`.
PYTHON ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) \
	/usr/bin/python3.12 python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1 && { echo "$$p"; break; }; \
	done)
ifeq ($(strip $(PYTHON)),)
PYTHON := python3
endif
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-py$(PYVER)

.PHONY: run test lint setup clean

# The stamp names the interpreter version, so a venv made by another Python is rebuilt.
$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.version_info < (3, 12) and print("warning: Python < 3.12, see the Makefile header")'
	@[ -f $(STAMP) ] || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) main.py gui --open resources/samples/sample_0/image.png --keypoints resources/samples/sample_0/keypoints.json

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV)
