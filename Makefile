# `make demo` and `make test` each create or refresh .venv first (idempotent: the install step
# reruns only when setup.py, setup.cfg or this Makefile change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_output

.PHONY: venv demo lint test clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# CPU build of PyTorch first, so nothing below pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[ros,test]'
	touch $(STAMP)

demo: venv
	$(BIN)/dl-perception demo --out $(DEMO_OUT)

lint: venv
	$(BIN)/ruff check .

test: venv
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
