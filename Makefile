# One command each, on a fresh machine: set-up is part of every target.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run validate test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --cores 1 --report results/report.html

validate: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[validate]"
	$(BIN)/snakemake validate --configfile config/validation.yaml --cores all

bench: $(STAMP)
	rm -f results/bench/train_speed.csv
	$(BIN)/python benchmarks/train_speed.py --arch resnet18
	$(BIN)/python benchmarks/train_speed.py --arch vgg16 --images 256 --rounds 4
	$(BIN)/python benchmarks/analysis_speed.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/study_overhead.py

test: $(STAMP)
	$(BIN)/python -m pytest

# What CI's lint step checks (also the pre-commit hook).
LINTED := src tests workflow/scripts benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/snakefmt --check workflow
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --lint --cores 1

clean:
	rm -rf results logs .snakemake
