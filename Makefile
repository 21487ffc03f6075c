# Two commands: `make report` (run the notebooks end to end) and `make test` (unit tests + nbval).
# Both build .venv first when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
# glibc returns PyTorch's large activation buffers to the OS after every forward pass and pays
# page faults to get them back; keeping them makes CPU inference 1.5-2.5x faster (measured).
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 4294967296
# pip installs without compiling the packages to bytecode (PyTorch's build is 6 GB; this saves
# about 35 s of the venv build) and Python compiles only the modules a run imports, once, into
# .venv: that needs bytecode writing, which PYTHONDONTWRITEBYTECODE (set on some machines) forbids.
unexport PYTHONDONTWRITEBYTECODE

PROFILE ?= embedded
DATA_DIR ?=
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

ifeq ($(PROFILE),paper)
  ifeq ($(strip $(DATA_DIR)),)
    REPORT_CHECK = $(error PROFILE=paper needs DATA_DIR=<folder with seg_train/ and seg_test/ of the Intel data>)
  endif
  REPORT_DIR := reports/paper
  PAPERMILL_ARGS := -f profiles/paper.yaml -p data_dir "$(abspath $(DATA_DIR))"
  export TRUST_AUDIT_FIGURES := $(abspath reports/paper/figures)
  export TRUST_AUDIT_REPORTS := $(abspath reports/paper)
else ifeq ($(PROFILE),embedded)
  REPORT_DIR := notebooks
  PAPERMILL_ARGS :=
else
  REPORT_CHECK = $(error unknown PROFILE=$(PROFILE); expected embedded or paper)
endif

.PHONY: install report test lint unit unit-paper unit-rest nbval browser lab clean $(addprefix report-,$(IDS)) $(addprefix nbval-,$(IDS))

# Unattended runs store no progress bars in the notebooks (helpers/progress.py reads this);
# `make lab` keeps live bars. No matplotlib backend is forced: the notebooks' kernels use the
# inline backend, so every figure lands in the notebook (and in JupyterLab when a cell is re-run).
report nbval: export TQDM_DISABLE := 1

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[test]"
	@touch $(STAMP)

# The notebooks run several at a time (two on 2 cores): 1.4x faster end to end than one at a time
# on all cores (measured, 211 s against 148 s for 04, 05, 07, 08 and 11). What must come first is
# stated below; `make -j` does the rest, longest first. A notebook's output is printed when it
# ends. JOBS=<n> sets how many notebooks run at once (default: the cores, 2 to 4). On the embedded
# default, 01 and 02 get 2 threads and every other kernel 1, whatever the machine: PyTorch's CPU
# results change in their last digits with the thread count, and training and gradient ascent
# amplify that, so fixed counts keep it out of nbval's comparison on a machine with more cores.
# The paper profile has no checked outputs and uses every core.
NPROC := $(shell nproc 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)
JOBS ?= $(shell n=$(NPROC); [ $$n -lt 2 ] && n=2; [ $$n -gt 4 ] && n=4; echo $$n)
ifeq ($(PROFILE),paper)
  HEAD_THREADS := $(NPROC)
  KERNEL_THREADS := $(shell n=$$(( $(NPROC) / $(JOBS) )); [ $$n -lt 1 ] && n=1; echo $$n)
else
  HEAD_THREADS := 2
  KERNEL_THREADS := 1
endif
nb = $(wildcard notebooks/$(1)_*.ipynb)
IDS := $(foreach n,$(NOTEBOOKS),$(firstword $(subst _, ,$(notdir $(n)))))
# 01 writes the data and 02 fine-tunes the model (on HEAD_THREADS) that every other notebook reads
# but 11, which uses the ImageNet model alone and so runs beside them. 12 reads 09's attacks from
# the run cache; 10 reads those and 12's corruption search, and shows 03's figure.
HEAD := 01 02
define after
report-$(1): $(addprefix report-,$(2))
nbval-$(1): $(addprefix nbval-,$(2))
endef
$(eval $(call after,02,01))
$(foreach id,$(filter-out $(HEAD) 11,$(IDS)),$(eval $(call after,$(id),02)))
$(eval $(call after,12,09))
$(eval $(call after,10,03 09 12))
LONGEST_FIRST := 06 09 04 07 12 11 08 05 03 10
ORDER := $(HEAD) $(filter $(IDS),$(LONGEST_FIRST)) $(filter-out $(HEAD) $(LONGEST_FIRST),$(IDS))
kernel_env = OMP_NUM_THREADS=$(if $(filter $(HEAD),$(1)),$(HEAD_THREADS),$(KERNEL_THREADS))

report: $(STAMP)
	$(REPORT_CHECK)
	@mkdir -p $(REPORT_DIR)
	@$(MAKE) --no-print-directory -j$(JOBS) -Otarget $(addprefix report-,$(ORDER))
	@echo "Notebooks written to $(REPORT_DIR)/, figures to $${TRUST_AUDIT_FIGURES:-figures}/"
	@echo "Trust report: $${TRUST_AUDIT_REPORTS:-reports}/trust_report.html (open it in a browser; the CSV is beside it)"

$(addprefix report-,$(IDS)): report-%:
	@start=$$(date +%s); \
	$(call kernel_env,$*) $(BIN)/papermill --cwd notebooks --log-level WARNING $(call nb,$*) \
		$(REPORT_DIR)/$(notdir $(call nb,$*)) $(PAPERMILL_ARGS) || exit 1; \
	echo "== $(call nb,$*): $$(( $$(date +%s) - start )) s"

test: lint unit nbval browser

# ruff: lint (pyflakes, pycodestyle, import order, bugbear; lines up to 100) and formatting
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The paper-profile test (two streams of notebooks, over half the unit tests' time) runs beside
# the other tests, which take one thread: 224 s against 283 s one after the other (measured).
unit: $(STAMP)
	@$(MAKE) --no-print-directory -j2 -Otarget unit-paper unit-rest

unit-paper:
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_paper_profile.py

unit-rest:
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests \
		--ignore=tests/test_paper_profile.py

nbval: $(STAMP)
	@$(MAKE) --no-print-directory -j$(JOBS) -Otarget $(addprefix nbval-,$(ORDER))

$(addprefix nbval-,$(IDS)): nbval-%:
	@echo "== $(call nb,$*)"
	@$(call kernel_env,$*) $(BIN)/python -m pytest -q -p no:cacheprovider --nbval-lax \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(call nb,$*)

# The trust report written by the nbval run of notebook 10, opened in headless Chromium.
browser: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_report_browser.py

lab: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,lab]"
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf .cache reports
