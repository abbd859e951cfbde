"""ragas metrics: string/context metrics with known values; judge metrics against a fake
OpenAI-compatible endpoint (answers well, answers garbage, or is down)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import workbench.evaluation.ragas_metrics as rm
from workbench.evaluation.ragas_metrics import JUDGE_METRICS, JudgeConfig, RagasSample, ragas_scores

SAMPLES = [
    RagasSample("How heavy is the Tern-3?", "It weighs 42 kg", ["42 kg"],
                retrieved_contexts=["The Tern-3 buoy weighs 42 kg.", "Economy class is required."],
                reference_contexts=["The Tern-3 buoy weighs 42 kg."]),
    RagasSample("What is the Tern-9 top speed?", "I don't know", [], retrieved_contexts=["Unrelated."],
                reference_contexts=None, abstained=True),
]

# What a well-behaved judge returns, by the response model ragas asks for (named in the JSON schema).
GOOD_OUTPUTS = {
    "NLIStatementOutput": {"statements": [{"statement": "The Tern-3 weighs 42 kg.", "reason": "stated",
                                           "verdict": 1}]},
    "StatementGeneratorOutput": {"statements": ["The Tern-3 weighs 42 kg."]},
    "ClaimDecompositionOutput": {"claims": ["The Tern-3 weighs 42 kg."]},
    "AnswerRelevanceOutput": {"question": "How heavy is the Tern-3?", "noncommittal": 0},
}


def _serve(mode: str):
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # /v1/models
            self._send({"object": "list", "data": [{"id": "judge-1", "object": "model"}]})

        def do_POST(self):  # /v1/chat/completions
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(req)
            system = req["messages"][0]["content"]
            if mode == "good":
                title = next(t for t in GOOD_OUTPUTS if f'"title": "{t}"' in system)
                content = json.dumps(GOOD_OUTPUTS[title])
            else:
                content = "Sure! The answer looks fine to me."  # not JSON: ragas cannot parse it
            self._send({"id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, calls


@pytest.fixture
def fake_encoder(monkeypatch):
    # every text gets the same vector: the regenerated question matches the original exactly
    monkeypatch.setattr(rm, "_judge_encoder", lambda name: (lambda texts: [[1.0, 0.0]] * len(texts)))


def test_string_and_context_metrics_without_judge():
    r = ragas_scores(SAMPLES)
    # Levenshtein("42 kg", "It weighs 42 kg") = 10 edits over 15 chars -> similarity 1/3
    assert r.scores["string_similarity"] == pytest.approx(1 / 3)
    # ROUGE-L (rouge-score tokens [it, weighs, 42, kg] vs [42, kg]): P = 1/2, R = 1 -> 2/3
    assert r.scores["rouge_l"] == pytest.approx(2 / 3)
    # the one reference passage is retrieved at rank 1: recall 1, average precision 1
    assert r.scores["context_recall"] == 1.0
    assert r.scores["context_precision"] == pytest.approx(1.0)
    assert r.n_scored == {"string_similarity": 1, "rouge_l": 1, "context_recall": 1, "context_precision": 1}
    assert r.per_item[1] == {}  # unanswerable, no reference passages: nothing to score
    for m in JUDGE_METRICS:
        assert m not in r.scores and "no judge configured" in r.skipped[m]


def test_context_precision_ranks_matter():
    s = RagasSample("q", "a", ["a"], retrieved_contexts=["Economy class is required.", "The Tern-3 buoy weighs 42 kg."],
                    reference_contexts=["The Tern-3 buoy weighs 42 kg."])
    r = ragas_scores([s])
    # relevant passage at rank 2 only: average precision = (1/2) / 1 = 0.5; recall still 1
    assert r.scores["context_precision"] == pytest.approx(0.5)
    assert r.scores["context_recall"] == 1.0


def test_closed_book_system_skips_context_metrics():
    r = ragas_scores([RagasSample("q", "42 kg", ["42 kg"])])
    assert r.scores["string_similarity"] == 1.0
    assert r.skipped["context_recall"] == "system retrieves no passages"


def test_judge_metrics_with_a_working_judge(fake_encoder):
    srv, calls = _serve("good")
    try:
        r = ragas_scores(SAMPLES, JudgeConfig(f"http://127.0.0.1:{srv.server_port}/v1"))
    finally:
        srv.shutdown()
    assert r.scores["faithfulness"] == 1.0
    assert r.scores["answer_relevancy"] == pytest.approx(1.0)
    assert r.scores["factual_correctness"] == 1.0
    assert r.failures == {}
    # the abstention is not judged (it makes no claims): one sample per judge metric
    assert r.n_scored["faithfulness"] == 1 and r.n_scored["answer_relevancy"] == 1
    assert calls and all(c["model"] == "judge-1" for c in calls)  # model taken from /v1/models


def test_unparseable_judge_is_counted_not_averaged(fake_encoder):
    srv, _ = _serve("garbage")
    try:
        r = ragas_scores(SAMPLES, JudgeConfig(f"http://127.0.0.1:{srv.server_port}/v1", model="judge-1"))
    finally:
        srv.shutdown()
    assert r.failures == {"faithfulness": 1, "answer_relevancy": 1, "factual_correctness": 1}
    for m in JUDGE_METRICS:
        assert m not in r.scores and r.skipped[m] == "all 1 calls failed"
    assert r.scores["rouge_l"] == pytest.approx(2 / 3)  # the rest is kept


def test_judge_down_warns_and_keeps_the_rest():
    with pytest.warns(UserWarning, match=r"unreachable \(ConnectError\): skipping judge metrics"):
        r = ragas_scores(SAMPLES, JudgeConfig("http://127.0.0.1:9/v1"))
    for m in JUDGE_METRICS:
        assert "unreachable" in r.skipped[m]
    assert r.scores["context_recall"] == 1.0 and r.scores["rouge_l"] == pytest.approx(2 / 3)
