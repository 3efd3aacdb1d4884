# Developer and CI entry points for tcpstack.
#
# The virtualenv is rebuilt only when pyproject.toml changes (stamp file), so
# `make test` / `make run` stay fast on repeated invocations.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install system-deps run test lint bench profile fuzz flood soak clean

# The sans-I/O core and the codec are compiled with mypyc into build/native/
# (scripts/build_core.py: about a minute; at once when the build is fresh).
# TCPSTACK_PURE=1 skips it, and runs the stack as plain Python.
install: $(STAMP)
	$(VENV)/bin/python scripts/build_core.py

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

# Foreground daemon; defaults (TUN tcps0, host 10.0.0.1/24, VIP 10.0.0.2,
# apps echo:7 discard:9 http:80) come from the program itself.
run: install
	exec $(VENV)/bin/tcpstack serve $(ARGS)

# Run both pytest and ruff even if the first fails, so one CI run reports
# everything; exit non-zero if either failed. Tests run on TEST_WORKERS
# processes (pytest-xdist), a whole file per worker: most integration tests
# wait on the network, so two workers halve the wall time on two cores.
TEST_WORKERS ?= 2
# The conformance suite runs twice: first against a daemon with --offload off
# (~30 s), then, in the whole suite, with offloads on (the default); the
# offload integration tests cover transfers in both modes. Everything runs on
# the compiled core; the unit suite runs once more in plain Python (~25 s).
test: install system-deps
	@status=0; \
	TCPSTACK_PURE=1 $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) tests/unit \
		|| status=$$?; \
	TCPSTACK_CONFORMANCE_OFFLOAD=off $(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) \
		--dist loadfile tests/conformance || status=$$?; \
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile || status=$$?; \
	$(VENV)/bin/ruff check tcpstack tests scripts examples || status=1; \
	exit $$status

# tcpstack against the kernel's TCP, both in throwaway network namespaces (root):
# prints a table and writes bench-results/bench-<date>.json. Sizes via ARGS
# (e.g. ARGS='--size 10000000 --conns 2000') or BENCH_* variables; see --help.
bench: install system-deps
	$(VENV)/bin/python scripts/bench.py $(ARGS)

# Where the daemon's CPU time goes (root; py-spy on `tcpstack serve` in bench's
# namespaces) while WORKLOAD (get, post, conn or rtt) runs: a flame graph and a
# text summary in bench-results/profile-<workload>-<date>.{svg,txt}. More via
# ARGS (e.g. ARGS='--seconds 30 --stack-args "--offload off"'); see
# docs/benchmarks.md.
WORKLOAD ?= get
profile: install system-deps
	$(VENV)/bin/python scripts/profile_stack.py $(WORKLOAD) $(ARGS)

# The proof of issue 8's hardening (root; own namespaces; a table, PASS/FAIL per
# check, JSON under bench-results/; exit 1 when a check fails). See
# docs/hardening.md, "Proof", and each script's --help; e.g. ARGS='--seed 1'.
fuzz: install system-deps
	$(VENV)/bin/python scripts/fuzz.py $(ARGS)

flood: install system-deps
	$(VENV)/bin/python scripts/flood.py $(ARGS)

soak: install system-deps
	$(VENV)/bin/python scripts/soak.py $(ARGS)

lint: install
	$(VENV)/bin/ruff check tcpstack tests scripts examples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
