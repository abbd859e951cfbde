"""Question synthesis: rule-based spans -> questions/cloze, paraphrases, LLM pairs (stub and HTTP endpoint)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from workbench.core.errors import WorkbenchError
from workbench.core.records import Chunk
from workbench.training.synth import (
    endpoint_completer,
    paraphrase_question,
    parse_qa_pairs,
    synthesize_llm,
    synthesize_rules,
)

TEXT = ("The Tern-3 buoy weighs 42 kg and carries four sensors. Kestrelmark was founded on 12 March 2011 "
        "in Orrvik by Ilse Varnholt. The pressure valve vents at 0.3 bar so that the well stays safe.")


def _chunk(text=TEXT, cid="spec.md#0", heading=""):
    return Chunk(id=cid, text=text, doc="spec.md", span=(0, len(text)), heading=heading)


def test_rules_make_questions_and_cloze_with_verbatim_answers():
    out = synthesize_rules([_chunk()], max_per_chunk=10)
    assert out, "no questions synthesized"
    for s in out:
        assert s.answer in TEXT                      # answer span kept verbatim
        if s.style == "cloze":
            assert s.question.startswith("Fill in the blank:") and "____" in s.question
            assert s.question.replace("____", s.answer).endswith(".")
        else:
            assert s.question.endswith("?") and s.answer not in s.question
    by_answer = {s.answer: s for s in out if s.style == "question"}
    assert by_answer["42 kg"].question == "The Tern-3 buoy weighs how much and carries four sensors?"
    assert by_answer["42 kg"].label == "QUANTITY"
    assert "12 March 2011" in by_answer and by_answer["12 March 2011"].label == "DATE"
    assert by_answer["12 March 2011"].question.startswith("Kestrelmark was founded when")
    assert "Ilse Varnholt" in by_answer and by_answer["Ilse Varnholt"].question.endswith("by who?")


def test_rules_cap_per_chunk_and_skip_partial_tokens():
    out = synthesize_rules([_chunk("Document PS-TERN3 applies to the Tern-3 buoy and to nothing else at all.")],
                           max_per_chunk=1)
    assert len({s.answer for s in out}) <= 1
    assert all(s.answer != "TERN3" for s in out)       # part of "PS-TERN3", not a span of its own


def test_table_rows_become_questions():
    text = "| Field | Value |\n|---|---|\n| Lead engineer | Sølvi Brekke |\n| Mass | 86 kg |"
    out = synthesize_rules([_chunk(text, heading="Tern-3 specification")])
    qs = {s.question: s.answer for s in out}
    assert qs["What is the lead engineer of Tern-3 specification?"] == "Sølvi Brekke"
    assert qs["What is the mass of Tern-3 specification?"] == "86 kg"


def test_paraphrases_are_distinct_and_new():
    q = "What is the maximum frame size in KTP v3?"
    ps = paraphrase_question(q, 4)
    assert len(ps) == 4 and len(set(ps)) == 4 and q not in ps
    assert all("KTP v3" in p for p in ps)               # content words survive
    assert paraphrase_question(q, 4) == ps               # deterministic
    assert paraphrase_question(q, 0) == []


def test_parse_and_llm_filter_keeps_only_verbatim_answers():
    reply = "1. Q: What does the buoy weigh?\nA: 42 kg.\nQ: Who founded it?\nA: Someone Else\nQuestion: Where?\nAnswer: Orrvik"
    assert parse_qa_pairs(reply) == [("What does the buoy weigh?", "42 kg"), ("Who founded it?", "Someone Else"),
                                     ("Where?", "Orrvik")]
    calls = []

    def fake(prompts):
        calls.append(prompts)
        return [reply for _ in prompts]

    out = synthesize_llm([_chunk()], fake, per_chunk=3)
    assert [(s.question, s.answer) for s in out] == [("What does the buoy weigh?", "42 kg"), ("Where?", "Orrvik")]
    assert TEXT in calls[0][0]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body, self.headers.get("Authorization")))
        out = json.dumps({"choices": [{"message": {"content": "Q: Mass?\nA: 42 kg"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


def test_endpoint_completer_speaks_openai_chat_api():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    server.seen = []
    t = threading.Thread(target=server.handle_request, daemon=True)
    t.start()
    try:
        complete = endpoint_completer(f"http://127.0.0.1:{server.server_port}/v1", "tiny", api_key="k")
        assert complete(["hello"]) == ["Q: Mass?\nA: 42 kg"]
    finally:
        t.join(5)
        server.server_close()
    path, body, auth = server.seen[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny" and auth == "Bearer k"
    assert body["messages"] == [{"role": "user", "content": "hello"}]


def test_endpoint_down_is_a_clear_error():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_port
    server.server_close()                                # nothing listens there now
    with pytest.raises(WorkbenchError, match="synthesis endpoint"):
        endpoint_completer(f"http://127.0.0.1:{port}", "m", timeout=2)(["x"])
