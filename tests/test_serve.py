"""``workbench serve`` over real HTTP (a subprocess on a free port, tiny models), and the remote backend
(``model.backend: openai``) evaluating against it."""
from __future__ import annotations

import json
import socket
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
def project(tmp_path_factory, tiny_st_dir):
    from app_project import build_app_lm  # the tiny LM made to give visible replies

    root = tmp_path_factory.mktemp("serve")
    return build_project(root / "proj", build_app_lm(root / "lm"), tiny_st_dir)


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
    srv = ServeProcess(project["root"], "--preset", str(project["preset"]), "--max-queue", "1", env=env)
    try:
        r = chat(srv.url, "base", max_tokens=4)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        key = {"Authorization": "Bearer s3cret"}

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
