"""The ``openai`` backend against a hostile server (the fault-injecting loopback server of
test_utility_openai): malformed bodies, huge bodies, a server that drips bytes, redirects, and
error bodies that echo the credentials back."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from test_utility_openai import FaultServer, client

from mixweave.errors import ConfigError
from mixweave.utility import LABELS
from mixweave.utility.backend import check_backend_settings, make_backend
from mixweave.utility.openai_backend import OpenAIBackend
from mixweave.utility.prompts import ANSWER_PREFIX

GOOD_MSG = '{"message": {"content": "Final Score: Good"}, "text": "Final Score: Good"}'


def body(choice: str = GOOD_MSG, usage: str = '{"prompt_tokens": 5, "completion_tokens": 1}') -> bytes:
    return f'{{"choices": [{choice}], "usage": {usage}}}'.encode()


def chat_lp(content: str) -> bytes:
    return body(f'{{"message": {{"content": "x"}}, "logprobs": {{"content": {content}}}}}')


def comp_lp(logprobs: str) -> bytes:
    return body(f'{{"text": " Good", "logprobs": {logprobs}}}')


ANY = {  # malformed whatever the endpoint or mode: (body, words the reason must contain)
    "choice is a number": (b'{"choices": [1]}', "choices[0] is an integer"),
    "choices is a string": (b'{"choices": "all of them"}', "choices is a string"),
    "no choices": (b'{"choices": []}', "choices is empty"),
    "body is a list": (b'[{"choices": []}]', "the body is a list"),
    "body is null": (b"null", "the body is null"),
    "not JSON": (b"<html>502 Bad Gateway</html>", "not JSON"),
    "deep nesting": (b"[" * 200_000, "not JSON"),
    "not UTF-8": (b'{"choices": [\xff\xfe]}', "not JSON"),
    "usage is a string": (body(usage='"lots"'), "usage is a string"),
    "usage overflows": (body(usage='{"prompt_tokens": 1e400}'), "usage.prompt_tokens is inf"),
    "usage negative": (body(usage='{"prompt_tokens": -5}'), "usage.prompt_tokens is -5"),
    "usage fractional": (body(usage='{"completion_tokens": 2.5}'), "usage.completion_tokens is 2.5"),
    "usage boolean": (body(usage='{"prompt_tokens": true}'), "usage.prompt_tokens is a boolean"),
    "usage huge": (body(usage='{"prompt_tokens": 100000000000000000000000000000}'), "not a token count"),
    "usage NaN": (body(usage='{"prompt_tokens": NaN}'), "usage.prompt_tokens is nan"),
}
GENERATE = {
    ("chat", "content is an object"): (body('{"message": {"content": {"text": "Good"}}}'),
                                       "message.content is an object"),
    ("chat", "content is a list"): (body('{"message": {"content": ["Final Score: Good"]}}'), "content is a list"),
    ("chat", "message is null"): (body('{"message": null}'), "choices[0].message is null"),
    ("chat", "no message"): (body('{"text": "Final Score: Good"}'), "choices[0].message is null"),
    ("completions", "text is a number"): (body('{"text": 5}'), "choices[0].text is an integer"),
}
LOGPROB = {
    ("chat", "content is a string"): (chat_lp('"Good"'), "logprobs.content is a string"),
    ("chat", "token is a number"): (chat_lp('[{"token": 5, "top_logprobs": []}]'), "content[0].token is an integer"),
    ("chat", "candidate is a number"): (chat_lp('[{"token": " Good", "top_logprobs": [1]}]'),
                                        "top_logprobs[0] is an integer"),
    ("chat", "logprob is a string"): (chat_lp('[{"token": " Good", "top_logprobs": [{"token": " Good", '
                                              '"logprob": "-0.1"}]}]'), "logprob is a string"),
    ("chat", "logprob above 0"): (chat_lp('[{"token": " Good", "top_logprobs": [{"token": " Good", '
                                          '"logprob": 3.0}]}]'), "above 0"),
    ("chat", "logprobs is a list"): (body('{"message": {"content": "x"}, "logprobs": [1, 2]}'),
                                     "choices[0].logprobs is a list"),
    ("completions", "tokens are numbers"): (comp_lp('{"tokens": [1], "top_logprobs": [{}]}'),
                                            "logprobs.tokens[0] is an integer"),
    ("completions", "top is a string"): (comp_lp('{"tokens": [" Good"], "top_logprobs": ["Good"]}'),
                                         "top_logprobs[0] is a string"),
    ("completions", "logprob is null"): (comp_lp('{"tokens": [" Good"], "top_logprobs": [{" Good": null}]}'),
                                         "is null"),
    ("completions", "no tokens"): (comp_lp('{"top_logprobs": [{" Good": -0.1}]}'), "logprobs.tokens is null"),
}
CASES = ([("generate", ep, name, *v) for name, v in ANY.items() for ep in ("chat", "completions")]
         + [("logprob", ep, name, *v) for name, v in ANY.items() for ep in ("chat", "completions")]
         + [("generate", ep, name, *v) for (ep, name), v in GENERATE.items()]
         + [("logprob", ep, name, *v) for (ep, name), v in LOGPROB.items()])


def ask(be, mode, prompts):
    if mode == "generate":
        return be.generate(prompts, max_tokens=8, temperature=0.0, seed=0)
    return be.label_probs(prompts, LABELS, answer_prefix=ANSWER_PREFIX)


@pytest.mark.parametrize("mode, endpoint, name, raw, reason", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_malformed_body_fails_that_request_only(mode, endpoint, name, raw, reason):
    with FaultServer() as srv:
        srv.faults = {"doc-bad": [raw]}
        be = client(srv, endpoint=endpoint, max_retries=0, timeout_s=10)  # answers at once; a loaded machine must not turn it into a timeout
        bad, good = ask(be, mode, ["rate doc-bad", "rate doc-good"])
    assert bad.error is not None and "malformed" in bad.error and reason in bad.error, bad.error
    assert bad.tokens_in == 0 and bad.tokens_out == 0
    assert good.error is None
    assert be.stats["fail_malformed"] == 1 and be.stats["gave_up"] == 1


def test_malformed_bodies_are_retried_then_succeed():
    with FaultServer() as srv:
        srv.faults = {"doc-1": [b'{"choices": [1]}', body(usage='"lots"')]}
        be = client(srv, max_retries=2, timeout_s=10)
        (res,) = be.label_probs(["rate doc-1"], LABELS, answer_prefix=ANSWER_PREFIX)
    assert res.error is None and res.probs[1] == pytest.approx(0.7)
    assert be.stats["fail_malformed"] == 2 and srv.count("doc-1") == 3


def test_huge_body_is_refused_without_retry():
    padded = body(f'{{"message": {{"content": "{"x" * 5000} Final Score: Good"}}}}')
    with FaultServer() as srv:
        srv.faults = {"doc-huge": [padded] * 5}
        be = client(srv, max_retries=3, max_response_bytes=2000, timeout_s=10)
        huge, fine = ask(be, "generate", ["doc-huge", "doc-fine"])
    assert "larger than 2000 bytes" in huge.error and srv.count("doc-huge") == 1
    assert fine.error is None


@pytest.mark.parametrize("fault", ["drip", "drip_head"])
def test_dripping_server_is_cut_off_at_the_deadline(fault):
    """A byte every 0.05 s never trips a per-read timeout; the whole-attempt deadline does. Two
    attempts of 0.5 s each: the bound below (10x that) only proves the client does not hang for the
    ~20 s the drip would last per attempt; it is not a timing measurement."""
    with FaultServer(drip_s=0.05) as srv:
        srv.faults = {"doc-slow": [fault] * 5}
        be = client(srv, timeout_s=0.5, max_retries=1)
        t0 = time.monotonic()
        slow, fine = ask(be, "generate", ["doc-slow", "doc-fine"])
        elapsed = time.monotonic() - t0
    assert slow.error is not None and "timeout" in slow.error and "deadline" in slow.error, slow.error
    assert "after 2 attempt(s)" in slow.error and srv.count("doc-slow") == 2
    assert fine.error is None
    assert elapsed < 10 * 2 * 0.5


def test_redirect_is_not_followed():
    with FaultServer() as srv:
        srv.faults = {"doc-r": ["redirect"] * 3}
        be = client(srv, api_key_env="MW_REDIRECT_KEY", timeout_s=10)
        (res,) = ask(be, "generate", ["doc-r"])
    assert "HTTP 307" in res.error and srv.count("doc-r") == 1


# -- secrets ---------------------------------------------------------------------------------------
def test_echoed_credentials_never_reach_errors_logs_or_info(monkeypatch, caplog):
    key, password, token = "sk-echo-me-0123456789", "pw-echo-333", "tok-echo-444"
    monkeypatch.setenv("MW_ECHO_KEY", key)
    with FaultServer() as srv:
        host = srv.url.split("//", 1)[1]
        url = f"http://alice:{password}@{host}?key={token}&api-version=7"
        srv.faults = {"doc-e": ["echo"] * 5}
        be = client(srv, base_url=url, api_key_env="MW_ECHO_KEY", max_retries=1)
        with caplog.at_level(logging.DEBUG, logger="mixweave"):
            bad, good = ask(be, "generate", ["doc-e", "doc-ok"])
        anonymous = client(srv, base_url=url)  # no API key: userinfo becomes Basic auth
        (anon,) = ask(anonymous, "generate", ["doc-ok"])
        headers = [h["Authorization"] for _, _, h in srv.requests]
        paths = [p for p, _, _ in srv.requests]
    assert good.error is None and anon.error is None
    assert headers[:-1] == [f"Bearer {key}"] * 3
    assert headers[-1] == "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert all(p == f"/v1/chat/completions?key={token}&api-version=7" for p in paths)
    assert "HTTP 500" in bad.error and "***" in bad.error
    shown = be.info()["base_url"]
    assert shown == f"http://***@{host}?key=***&api-version=7" and shown in repr(be)
    blob = bad.error + caplog.text + repr(be) + str(be.info()) + str(be.errors)
    for secret in (key, password, token, base64.b64encode(f"alice:{password}".encode()).decode()):
        assert secret not in blob


def test_bad_base_urls_and_options_are_config_errors_without_secrets():
    for url in ("ftp://h/v1", "http://", "http://h:99999/v1", "http://[::1/v1", "127.0.0.1:8000/v1", None):
        with pytest.raises(ConfigError, match="base_url") as info:
            OpenAIBackend("m", base_url=url)
    with pytest.raises(ConfigError) as info:
        OpenAIBackend("m", base_url="ftp://bob:pw-never-shown@h/v1")
    assert "pw-never-shown" not in str(info.value)
    with pytest.raises(ConfigError, match="timeout_s must be a number > 0"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", timeout_s="soon")
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", concurrency=0)
    with pytest.raises(ConfigError, match=r"unknown backend_options \['api_key'\].*base_url"):
        make_backend("openai", "m", base_url="http://127.0.0.1:1/v1", api_key="sk-x")
    with pytest.raises(ConfigError, match="unknown backend_options"):
        check_backend_settings("openai", "m", {"base_url": "http://127.0.0.1:1/v1", "timeout": 3})


def test_scrubbing_helpers():
    from mixweave.utility.secrets import redact_url, scrub, scrub_text, url_secrets

    assert redact_url("https://u:p@h:1/v1?api_key=abc&x=1&Token=t#f") == "https://***@h:1/v1?api_key=***&x=1&Token=***#f"
    assert redact_url("http://h/v1?api-version=2024") == "http://h/v1?api-version=2024"
    assert sorted(url_secrets("http://u:p%40ss@h/?sig=s1&q=2")) == ["p@ss", "s1", "u"]
    text = ('sent {"Authorization": "Bearer sk-1234567", "x-api-key": "k-2"} to http://a:b@h/?key=k3 with sk-long-known;'
            " a token count, Basic auth")
    out = scrub_text(text, ["sk-long-known"])
    assert all(s not in out for s in ("sk-1234567", "k-2", "a:b", "k3", "sk-long-known"))
    assert out.endswith("; a token count, Basic auth")
    assert scrub({"api_key": "v", "api_key_env": "ENV", "n": [1, "http://h/?token=t"]}) == \
        {"api_key": "***", "api_key_env": "ENV", "n": [1, "http://h/?token=***"]}
