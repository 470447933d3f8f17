# Every target sets up its own virtual environment (.venv) on first use. VENV= (empty) uses
# $(PYTHON) as it is instead: for a machine with torch and the dependencies installed and no
# package index (a GPU server, an autograder image).
PYTHON ?= python3
VENV ?= .venv
PY := $(if $(strip $(VENV)),$(VENV)/bin/python,$(PYTHON))
# torch first, pinned, so that pip does not pick a multi-GB CUDA build where a CPU one will do.
TORCH_SPEC ?= torch==2.13.0
DATA_DIR ?=
DEVICE ?= auto
RECIPES ?=
SEEDS ?= 10
FIRST_SEED ?= 0
SUBMISSION ?=
OUT ?=
TRAINING ?=
JOBS ?= 1
FORCE ?=
ALLOW_UNISOLATED ?=
# The course file (points, visibility, training, guards): grade, autograder and handout read it.
COURSE ?= course.toml

data_flag = $(if $(DATA_DIR),--data-dir $(DATA_DIR))

.PHONY: setup jail slurm test test-fast reference template handout autograder bench theory grade check clean

setup: $(if $(strip $(VENV)),$(VENV)/.installed)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

## jail: install bubblewrap, which isolates the student's code (Debian/Ubuntu, as root); says so otherwise (grade and bench run it first: no jail, no grading)
jail:
	@if command -v bwrap >/dev/null; then echo "bubblewrap: $$(bwrap --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null)) \
		&& echo "bubblewrap: installed $$(bwrap --version)" || echo "bubblewrap: could not be installed"; \
	else echo "bubblewrap: not installed; install it (e.g. apt-get install bubblewrap) to isolate student code"; fi

## slurm: install Slurm and munge (Debian/Ubuntu, as root), with which the tests start a one-node cluster; says so otherwise
slurm:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then echo "slurm: $$(slurmctld -V)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null)) \
		&& echo "slurm: installed $$(slurmctld -V)" || echo "slurm: could not be installed (the Slurm test skips)"; \
	else echo "slurm: not installed; the Slurm test skips (apt-get install slurm-wlm munge)"; fi

## test: the whole test suite, a line per file as it goes and the 15 slowest at the end (tests that need the real data skip without it; set DATA_DIR or VITKIT_DATA)
test: setup
	$(if $(DATA_DIR),VITKIT_DATA=$(DATA_DIR)) $(PY) -m pytest --durations=15

## test-fast: the unit tier: no grader child, wheel, bundle, Slurm, make, notebook kernel or training on real data (README, Tests)
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not integration" --durations=5

## reference: train the reference on every recipe (RECIPES="mnist" for one) and write reference/results/
reference: setup
	$(PY) -m reference $(data_flag) --device $(DEVICE) $(if $(RECIPES),--recipes $(RECIPES))

## template: regenerate student_template/ from reference/
template: setup
	$(PY) -m course.template

## handout: dist/vit-homework-handout.zip, all that students receive (template, notebooks, visible tests, README)
handout: setup
	$(PY) -m course.handout --torch-spec "$(TORCH_SPEC)" --course "$(COURSE)"

## autograder: dist/vit-homework-autograder.zip for Gradescope (setup.sh, run_autograder, the kit's wheel, MNIST from DATA_DIR; TRAINING=checkpoint: grade submitted weights, CIFAR-10 too; TORCH_WHEEL=file carries torch, TORCH_INDEX=url takes it from another index than PyPI)
autograder: setup
	$(PY) -m course.autograder --torch-spec "$(TORCH_SPEC)" --course "$(COURSE)" $(data_flag) $(if $(TRAINING),--training $(TRAINING)) $(if $(ALLOW_UNISOLATED),--allow-unisolated) $(if $(TORCH_INDEX),--torch-index "$(TORCH_INDEX)") $(if $(TORCH_WHEEL),--torch-wheel "$(TORCH_WHEEL)")

## bench: time the recipes to their grading thresholds over SEEDS seeds, and the grader, on this machine
bench: setup jail
	$(PY) -m reference.bench $(data_flag) --device $(DEVICE) --seeds $(SEEDS) --first-seed $(FIRST_SEED) $(if $(RECIPES),--recipes $(RECIPES))
	$(PY) -m grader.bench $(data_flag) --device $(DEVICE)
	$(PY) -m course.bench $(data_flag)

## grade: grade SUBMISSION (one path, several in quotes, or a class folder with one submission per entry; default: reference/ as a self-check); JOBS=N side by side, FORCE=1 regrades unchanged ones, ALLOW_UNISOLATED=1 grades where the jail cannot be had
grade: setup jail
	$(if $(DATA_DIR),VITKIT_DATA=$(DATA_DIR)) $(PY) -m grader $(SUBMISSION) --course "$(COURSE)" $(if $(TRAINING),--training $(TRAINING)) --device $(DEVICE) $(if $(OUT),--out $(OUT)) $(if $(TIME_LIMIT),--time-limit $(TIME_LIMIT)) --jobs $(JOBS) $(if $(FORCE),--force) $(if $(ALLOW_UNISOLATED),--allow-unisolated)

## check: the students' quick visible checks on SUBMISSION (default: student_template/)
check: setup
	$(PY) -m grader --check $(SUBMISSION)

## theory: render the worked answers to theory/build/answers.html (offline maths) and the question sheet
theory: setup
	$(PY) -m theory.build

clean:
	rm -rf $(VENV) .pytest_cache dist
