# Quick start: `make run` (set up + open the app on a bundled sample), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint setup clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
