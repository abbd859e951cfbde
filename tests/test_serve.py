"""``workbench serve`` over real HTTP (a subprocess on a free port, tiny models), and the remote backend
(``model.backend: openai``) evaluating against it."""
from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_project import ServeProcess, build_project, env_for, one_error_line, write_preset
from typer.testing import CliRunner

from workbench.answering.remote import snap_to_span
from workbench.cli import app
from workbench.core.config import load_preset, override
from workbench.core.errors import WorkbenchError
from workbench.serving.pool import ModelPool, Route

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUESTION = "What does the Tern-3 weigh?"


@pytest.fixture(scope="module")
def project(tmp_path_factory, app_lm_dir, tiny_st_dir):
    root = tmp_path_factory.mktemp("serve")  # app_lm_dir: the tiny LM made to give visible replies
    return build_project(root / "proj", app_lm_dir, tiny_st_dir)


@pytest.fixture(scope="module")
def server(project):
    srv = ServeProcess(project["root"], "--preset", str(project["preset"]), "--index", "tiny",
                       "--adapters", "tiny-sft")
    yield srv
    srv.stop()


@pytest.fixture
def home(project, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(project["root"]))
    return project["root"]


def openai_client(url: str, key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def listing(*folders: Path) -> dict[str, list[str]]:
    return {str(f): sorted(p.name for p in f.iterdir()) if f.is_dir() else [] for f in folders}


def chat(url: str, model: str, content: str = QUESTION, **body) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": content}], **body})


def streamed(url: str, model: str, content: str = QUESTION, **body) -> tuple[str, list[dict]]:
    """The text joined from a streamed reply, and its chunks."""
    chunks = []
    with httpx.stream("POST", f"{url}/chat/completions", timeout=120,
                      json={"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
                            **body}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks), chunks


# --- endpoints ---------------------------------------------------------------------------------------

def test_models_lists_every_served_name(server):
    r = httpx.get(f"{server.url}/models")
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["base", "ft:tiny-sft", "rag:tiny", "ft_rag:tiny-sft:tiny", "tiny-sft", "embed:tiny"]


def test_plain_models_answer_and_the_adapter_changes_the_reply(server):
    base = chat(server.url, "base", max_tokens=8).json()
    ft = chat(server.url, "ft:tiny-sft", max_tokens=8).json()
    assert base["object"] == "chat.completion" and base["model"] == "base"
    assert base["choices"][0]["message"]["role"] == "assistant"
    assert base["usage"]["completion_tokens"] == 8 and base["choices"][0]["finish_reason"] == "length"
    assert base["choices"][0]["message"]["content"] and "workbench" not in base
    assert ft["choices"][0]["message"]["content"] != base["choices"][0]["message"]["content"]
    # vLLM names a LoRA module by its bare name: so does workbench serve
    bare = chat(server.url, "tiny-sft", max_tokens=8).json()
    assert bare["choices"][0]["message"]["content"] == ft["choices"][0]["message"]["content"]
    # asked for, the token log-probabilities come in the extra field (the remote backend's confidence)
    lp = chat(server.url, "base", max_tokens=8, logprobs=True).json()
    assert lp["choices"][0]["message"]["content"] == base["choices"][0]["message"]["content"]
    assert len(lp["workbench"]["logprobs"]) == 8 and all(x <= 0 for x in lp["workbench"]["logprobs"])
    assert lp["workbench"]["abstain_logprob"] < 0


def test_rag_reply_is_the_answer_evaluation_gives_with_its_sources(server, project, home):
    r = chat(server.url, "rag:tiny")
    assert r.status_code == 200
    body = r.json()
    sources = body["workbench"]["sources"]
    assert [s["n"] for s in sources] == [1, 2] and sources[0]["doc"] == "buoy.md"
    assert "42 kg" in sources[0]["text"] and set(sources[0]) == {"n", "id", "doc", "heading", "score", "text"}
    # the same question answered in-process through workbench.answering.answer (what evaluation runs)
    pool = ModelPool(load_preset(project["preset"]), ["tiny"])
    local = pool.answer(QUESTION, Route(None, "tiny"))
    assert body["choices"][0]["message"]["content"] == local.text
    assert body["workbench"]["raw"] == local.raw
    assert [c["n"] for c in body["workbench"]["citations"]] == [c.n for c in local.citations]


@pytest.mark.parametrize("model", ["base", "ft_rag:tiny-sft:tiny"])
def test_streamed_reply_joins_to_the_plain_one(server, model):
    plain = chat(server.url, model, max_tokens=8).json()
    text, chunks = streamed(server.url, model, max_tokens=8)
    assert text == plain["choices"][0]["message"]["content"] and text
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].get("workbench") == plain.get("workbench")
    if model == "base":  # streamed as generated: the pieces are the tokens' text, several of them
        assert len(chunks) > 3
    else:  # a retrieval model's answer is cleaned after generation, then sent word by word
        assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


def test_sixteen_concurrent_requests_match_sequential_ones(server):
    questions = [f"{q} (#{i})" for i, q in enumerate([QUESTION, "Who leads Kestrelmark?", "Where is Orrvik?",
                                                      "How heavy is the buoy?"] * 4)]
    sequential = [chat(server.url, "base", q, max_tokens=6).json()["choices"][0]["message"]["content"]
                  for q in questions]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda q: chat(server.url, "base", q, max_tokens=6).json(), questions))
    assert [t["choices"][0]["message"]["content"] for t in together] == sequential
    assert len(set(sequential)) > 1


def test_embeddings_use_the_index_embedder(server, project):
    r = httpx.post(f"{server.url}/embeddings", json={"model": "embed:tiny", "input": ["42 kg", "Orrvik"]})
    assert r.status_code == 200
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1] and len(data[0]["embedding"]) == 32
    from workbench.retrieval.embed import Embedder

    want = Embedder(str(load_preset(project["preset"]).index.embedder), device="cpu").encode(["42 kg"], role="query")
    assert data[0]["embedding"] == pytest.approx([float(x) for x in want[0]], abs=1e-5)


# --- the protocol as OpenAI clients speak it -----------------------------------------------------------

class _Recording:
    """A Generator stand-in that keeps the Generations it returned (what was fed to the model)."""

    def __init__(self, gen):
        self.gen, self.tokenizer, self.cfg, self.out = gen, gen.tokenizer, gen.cfg, []

    def generate(self, *args, **kwargs):
        self.out = self.gen.generate(*args, **kwargs)
        return self.out


@pytest.mark.parametrize("adapter", [None, "tiny-sft"])
def test_usage_counts_the_prompt_fed_to_a_retrieval_model(server, project, home, adapter):
    route = Route(adapter, "tiny")
    body = chat(server.url, route.model_id).json()
    pool = ModelPool(load_preset(project["preset"]), ["tiny"], [adapter] if adapter else [])
    recording = _Recording(pool.generator(adapter))
    answer = pool.answer(QUESTION, route, recording)
    fed = recording.out[0].n_prompt_tokens  # the prompt with its passages, as the model was fed it
    assert body["choices"][0]["message"]["content"] == answer.text
    assert body["usage"] == {"prompt_tokens": fed, "completion_tokens": answer.n_new_tokens,
                             "total_tokens": fed + answer.n_new_tokens} and fed > 20


@pytest.mark.parametrize("model", ["base", "rag:tiny"])
def test_streamed_usage_comes_last_when_asked_for(server, model):
    client = openai_client(server.url)
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8)
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == plain.choices[0].message.content
    without = list(client.chat.completions.create(model=model, messages=messages, max_tokens=8, stream=True))
    assert all(c.choices and c.usage is None for c in without)


def _reference_logprobs(lm_dir: str, messages: list[dict], tokens: list[str]) -> list[float]:
    """The log-probability of each reply token under the model, computed here with transformers alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    reply = tok("".join(tokens), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(reply)[:, None]).squeeze(1).tolist()


def test_logprobs_in_openai_format_streamed_or_not(server, project):
    client = openai_client(server.url)
    messages = [{"role": "user", "content": QUESTION}]
    r = client.chat.completions.create(model="base", messages=messages, max_tokens=8, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content and len(content) >= 4
    for t in content:
        assert t.bytes == list(t.token.encode("utf-8")) and t.logprob <= 0
        tops = [x.logprob for x in t.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and t.logprob <= tops[0] + 1e-6
    want = _reference_logprobs(str(load_preset(project["preset"]).model.base_model), messages,
                               [t.token for t in content])
    assert [t.logprob for t in content] == pytest.approx(want, abs=1e-3)
    assert client.chat.completions.create(model="base", messages=messages, max_tokens=8).choices[0].logprobs is None

    chunks = list(client.chat.completions.create(model="base", messages=messages, max_tokens=8, logprobs=True,
                                                 top_logprobs=3, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    # a retrieval model: the answer's tokens, given the prompt built around its passages
    rag = client.chat.completions.create(model="rag:tiny", messages=messages, logprobs=True)
    tokens = rag.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == rag.choices[0].message.content and tokens[0].top_logprobs == []


def test_developer_role_is_the_system_prompt(server):
    client = openai_client(server.url)

    def reply(role: str):
        return client.chat.completions.create(model="base", max_tokens=8, messages=[
            {"role": role, "content": "Answer in one word."}, {"role": "user", "content": QUESTION}])
    developer, system = reply("developer"), reply("system")
    assert developer.choices[0].message.content == system.choices[0].message.content
    assert developer.usage.prompt_tokens == system.usage.prompt_tokens


def test_one_model_health_and_refused_features(server):
    import openai

    client = openai_client(server.url)
    assert client.models.retrieve("ft_rag:tiny-sft:tiny").id == "ft_rag:tiny-sft:tiny"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("rag:nope")
    assert e.value.body["code"] == "model_not_found"
    health = httpx.get(server.url.removesuffix("/v1") + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    with pytest.raises(openai.BadRequestError, match="'tools' is not supported"):
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], tools=[
            {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}])
    # what asks for nothing beyond plain text is accepted
    ok = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                        response_format={"type": "text"}, tool_choice="none")
    assert ok.choices[0].message.content


def test_long_prompt_is_cut_and_said_and_big_body_is_413(server):
    long = " ".join(["the buoy weighs 42 kg"] * 800)  # ~4,000 tokens: over the tiny model's 1,024
    r = chat(server.url, "base", long, max_tokens=8)
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 1024 - 8  # the end of the prompt that fits beside the reply
    cut = int(r.headers["x-workbench-prompt-truncated"])
    assert cut > 2000
    assert f"cut to its last {1024 - 8} tokens" in server.wait_for_line(f"({1024 - 8 + cut} tokens)")
    assert "x-workbench-prompt-truncated" not in chat(server.url, "base", max_tokens=8).headers
    with httpx.stream("POST", f"{server.url}/chat/completions", timeout=120,
                      json={"model": "base", "messages": [{"role": "user", "content": long}], "max_tokens": 8,
                            "stream": True}) as s:
        assert int(s.headers["x-workbench-prompt-truncated"]) == cut
        s.read()

    big = json.dumps({"model": "base", "messages": [{"role": "user", "content": "x" * 1_100_000}]}).encode()
    r = httpx.post(f"{server.url}/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunked():  # no declared length: refused while it arrives
        for _ in range(12):
            yield b"x" * 100_000
    r = httpx.post(f"{server.url}/chat/completions", content=chunked())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_disconnected_stream_stops_generating(server):
    with httpx.stream("POST", f"{server.url}/chat/completions", timeout=120,
                      json={"model": "base", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2000,
                            "stream": True}) as r:
        lines = r.iter_lines()
        got = [line for _, line in zip(range(6), lines) if line.startswith("data: ")]
        assert len(got) >= 3
    # the connection is closed mid-reply: the model is free for the next request at once
    t0 = time.monotonic()
    assert chat(server.url, "base", max_tokens=4).status_code == 200
    assert time.monotonic() - t0 < 2
    n = int(re.search(r"after (\d+) of 2000 tokens", server.wait_for_line("stopped a streamed reply")).group(1))
    assert n < 1000


def test_names_only_never_paths(server, project, home):
    """Served names are names of built artifacts: paths are refused at start and over HTTP, and nothing is
    ever built."""
    root = project["root"]
    before = listing(root, root / "indices", root / "adapters")
    preset = ["--preset", str(project["preset"])]
    for args, needle in [(["--index", "../../etc"], "invalid index name '../../etc'"),
                         (["--index", "/etc"], "invalid index name '/etc'"),
                         (["--index", str(project["corpus"])], "invalid index name"),
                         (["--adapters", "/etc"], "invalid adapter name '/etc'"),
                         (["--index", "corpora"], "no index 'corpora' is built in this project"),
                         (["--adapters", "tiny"], "no adapter 'tiny' is built")]:  # an index is not an adapter
        result = CliRunner().invoke(app, ["serve", "--port", "0", *preset, *args])
        assert needle in one_error_line(result), args
    r = httpx.post(f"{server.url}/embeddings", json={"model": "embed:../../etc", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert httpx.get(f"{server.url}/models/rag:..").status_code == 404
    assert listing(root, root / "indices", root / "adapters") == before


# --- bad requests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, param, code", [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "ft:missing", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "rag:missing", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "base"}, 400, "messages", None),
    ({"model": "base", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, 400, "max_tokens", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5}, 400, "stop", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature",
     None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400, "tools", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}, 400, "tool_choice",
     None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]}, 400,
     "functions", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
     400, "response_format", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}},
     400, "stream_options", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400, "top_logprobs", None),
    ({"model": "base", "messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs", None),
    ({"model": "rag:../../etc", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "rag:/etc", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "ft_rag:tiny-sft:../indices/tiny", "messages": [{"role": "user", "content": "x"}]}, 404, "model",
     "model_not_found"),
])
def test_bad_requests_get_openai_style_errors(server, body, status, param, code):
    r = httpx.post(f"{server.url}/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code and err["message"]


def test_malformed_json_and_unknown_paths(server):
    r = httpx.post(f"{server.url}/chat/completions", content=b'{"model": "base", "messages": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{server.url}/embeddings", json={"model": "embed:nope", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(f"{server.url}/embeddings", json={"model": "embed:tiny", "input": [1, 2]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_full_queue_answers_503_and_a_key_is_required_when_set(project):
    env = env_for(project["root"], WORKBENCH_API_KEY="s3cret")
    srv = ServeProcess(project["root"], "--preset", str(project["preset"]), "--max-queue", "1",
                       "--max-body-mb", "0.05", env=env)
    try:
        r = chat(srv.url, "base", max_tokens=4)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "s3cret", "Bearer S3CRET"]:
            r = httpx.get(f"{srv.url}/models", headers={"Authorization": wrong})
            assert r.status_code == 401, wrong
        assert httpx.get(srv.url.removesuffix("/v1") + "/health").status_code == 200  # no key needed
        key = {"Authorization": "Bearer s3cret"}
        assert openai_client(srv.url, "s3cret").models.retrieve("base").id == "base"
        r = httpx.post(f"{srv.url}/chat/completions", headers=key,
                       json={"model": "base", "messages": [{"role": "user", "content": "x" * 60_000}]})
        assert r.status_code == 413 and "50,000 bytes" in r.json()["error"]["message"]

        def one(i: int) -> httpx.Response:
            return httpx.post(f"{srv.url}/chat/completions", headers=key, timeout=120,
                              json={"model": "base", "max_tokens": 200,
                                    "messages": [{"role": "user", "content": f"question {i}"}]})
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(one, range(8)))
        codes = sorted(r.status_code for r in replies)
        assert 200 in codes and 503 in codes, codes
        busy = next(r for r in replies if r.status_code == 503).json()["error"]
        assert busy["code"] == "queue_full" and busy["type"] == "server_error"
    finally:
        srv.stop()


def test_empty_api_key_is_refused_at_start(project, home, monkeypatch):
    monkeypatch.setenv("WORKBENCH_API_KEY", "")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--preset", str(project["preset"])])
    assert "$WORKBENCH_API_KEY is set but empty" in one_error_line(result)
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--preset", str(project["preset"]), "--max-body-mb", "0"])
    assert "max_body_mb=0.0" in one_error_line(result)


def test_port_in_use_is_one_clear_line(project, home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--port", str(port), "--preset", str(project["preset"])])
    assert f"port {port} on 127.0.0.1 is already in use" in one_error_line(result)


def test_missing_adapter_or_index_stops_the_start(project, home):
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--preset", str(project["preset"]),
                                      "--adapters", "nope"])
    assert "no adapter 'nope'" in one_error_line(result)
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--preset", str(project["preset"]),
                                      "--index", "nope"])
    assert "nope" in one_error_line(result)


# --- the remote backend ------------------------------------------------------------------------------

def _predictions(run: Path) -> dict[tuple[str, str], tuple]:
    """(system, question id) -> (prediction, confidence)."""
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    return {(r["system"], r["id"]): (r["prediction"], r.get("confidence")) for r in rows}


def test_eval_over_workbench_serve_matches_the_local_backend(server, project, home):
    from workbench.evaluation.evaluate import evaluate

    # one prompt at a time on both sides: the tiny LM's scaled-up weights make its greedy choice sensitive
    # to the float noise of left padding (batching itself is checked by the 16-request test above)
    cfg = override(load_preset(project["preset"]), generate={"copy_spans": False, "batch_size": 1},
                   eval={"systems": ["base", "rag", "ft"]})
    local = evaluate(project["corpus"], cfg, index="tiny", adapter="tiny-sft", out=home / "runs" / "local",
                     progress=False)
    remote_cfg = override(cfg, model={"backend": "openai", "base_url": server.url, "model": "base",
                                      "concurrency": 1})
    remote = evaluate(project["corpus"], remote_cfg, index="tiny", adapter="tiny-sft",
                      out=home / "runs" / "remote", progress=False)
    want, got = _predictions(local), _predictions(remote)
    assert got == want and len(want) == 9  # the same answers, and the same confidence (log-probs sent back)
    assert any(p for p, _ in want.values())
    summary = json.loads((remote / "summary.json").read_text())
    assert summary["cost"]["model_backend"] == "openai"
    assert summary["cost"]["remote"] == {"base_url": server.url, "model": "base", "lora_model": "{adapter}",
                                         "copy": "off"}
    assert "the model was remote (base at " in (remote / "report.md").read_text()
    assert json.loads((local / "summary.json").read_text())["cost"]["model_backend"] == "local"


def test_ragas_judge_runs_against_workbench_serve(server, project):
    from workbench.evaluation.ragas_metrics import JudgeConfig, RagasSample, ragas_scores

    # one judge metric (answer relevancy: no passages, no reference), since ragas asks for 1,024-token
    # verdicts and the tiny model never stops early
    sample = RagasSample("How heavy is the Tern-3?", "42 kg", [])
    judge = JudgeConfig(server.url, model="base", embedder=str(load_preset(project["preset"]).index.embedder))
    r = ragas_scores([sample], judge)
    # it was asked of the server; the tiny random model's verdict does not parse, so it is counted as a
    # failure (a real judge model scores it), never skipped as unreachable
    assert r.failures.get("answer_relevancy", 0) + r.n_scored.get("answer_relevancy", 0) == 1, r.skipped
    assert not any("unreachable" in why for why in r.skipped.values())


def test_unreachable_backend_is_one_line_and_writes_nothing(project, home, tmp_path):
    preset = write_preset(tmp_path, Path("unused"), Path("unused"))
    text = preset.read_text().replace("  base_model: unused\n",
                                      "  base_model: unused\n  backend: openai\n  base_url: http://127.0.0.1:9/v1\n")
    preset.write_text(text)
    result = CliRunner().invoke(app, ["eval", str(project["corpus"]), "--systems", "base", "--preset", str(preset),
                                      "--name", "nowhere"])
    line = one_error_line(result)
    assert "model backend http://127.0.0.1:9/v1/models is unreachable" in line
    assert not (home / "runs" / "nowhere").exists()


def test_backend_that_lacks_the_adapter_is_refused(server, project, home):
    from workbench.evaluation.systems import SYSTEMS, check_adapters

    cfg = override(load_preset(project["preset"]), model={"backend": "openai", "base_url": server.url})
    with pytest.raises(WorkbenchError, match=r"does not serve adapter 'other'.*--lora-modules other=adapters/other"):
        check_adapters([SYSTEMS["ft"]], {"ft": "other"}, project["corpus"], cfg.model)
    check_adapters([SYSTEMS["ft"], SYSTEMS["rag"]], {"ft": "tiny-sft"}, project["corpus"], cfg.model)


@pytest.mark.parametrize("reply, sources, want", [
    ("It weighs 42 kg, I think", ["The Tern-3 buoy weighs 42 kg. It runs on a 9 Ah battery."], "weighs 42 kg"),
    ("a 9 Ah battery", ["The Tern-3 buoy weighs 42 kg.", "It runs on a 9 Ah battery."], "9 Ah battery"),
    ("I don't know", ["The Tern-3 buoy weighs 42 kg."], "I don't know"),
    ("purple elephants", ["The Tern-3 buoy weighs 42 kg."], "I don't know"),
    ("Ilse Varnholt", ["Economy class.", "Ilse Varnholt leads Kestrelmark."], "Ilse Varnholt"),
])
def test_snap_to_span(reply, sources, want):
    assert snap_to_span(reply, sources) == want


def test_snap_respects_banned_start_words():
    from workbench.answering.copying import CopySource

    src = [CopySource("The buoy weighs 42 kg.", no_start=frozenset({"weighs", "the"}))]
    assert snap_to_span("weighs 42 kg", src) == "buoy weighs 42 kg"  # "weighs ..." may not open a reply



def test_backend_failing_during_a_run_stops_it_with_one_clear_error():
    from workbench.answering.remote import RemoteGenerator
    from workbench.core.config import GenerateConfig, ModelConfig

    cfg = ModelConfig(backend="openai", base_url="http://127.0.0.1:9/v1", retries=1)
    gen = RemoteGenerator(cfg, GenerateConfig(), model="base", tokenizer="not used")
    with pytest.raises(WorkbenchError, match=r"model backend http://127.0.0.1:9/v1/chat/completions failed for "
                                             r"model 'base' \(ConnectError\)"):
        gen.generate([[{"role": "user", "content": "x"}]])
