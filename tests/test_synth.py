"""Question synthesis: fronted questions by answer kind (English and Portuguese), the drop-rather-than-break
rule, wordings per fact, the served-model backend against a fake OpenAI-compatible server, the synth CLI,
and the form rules on real text (slow)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.config import SynthConfig
from workbench.core.errors import WorkbenchError
from workbench.core.records import Chunk
from workbench.training.questions import phrase_question, subject_of
from workbench.training.synth import (
    answer_in_question,
    looks_like_question,
    paraphrase_question,
    parse_qa_blocks,
    parse_qa_pairs,
    passes_form,
    synthesize,
    synthesize_llm,
    synthesize_rules,
    synthesize_rules_run,
    wordings_of,
)

REPO = Path(__file__).resolve().parents[1]
TEXT = ("The Tern-3 buoy weighs 42 kg and carries four sensors. Kestrelmark was founded in 2011 by Ilse Varnholt. "
        "The Romans kept eight legions in five bases along the Rhine. The company is based in Orrvik.")


def _chunk(text=TEXT, cid="spec.md#0", heading=""):
    return Chunk(id=cid, text=text, doc="spec.md", span=(0, len(text)), heading=heading)


def _ask(sentence: str, answer: str, label: str, lang: str = "en") -> str | None:
    at = sentence.index(answer)
    phrased = phrase_question(sentence, at, at + len(answer), label, lang)
    return phrased.question if phrased else None


@pytest.mark.parametrize("sentence, answer, label, question", [
    ("The Normans reached Normandy in 911.", "911", "DATE", "When did the Normans reach Normandy?"),
    ("In 1911, the Normans reached Normandy.", "1911", "DATE", "When did the Normans reach Normandy?"),
    ("Kestrelmark was founded in 2011 by Ilse Varnholt.", "2011", "DATE",
     "When was Kestrelmark founded by Ilse Varnholt?"),
    ("Ilse Varnholt founded Kestrelmark in 2011.", "Ilse Varnholt", "NAME", "Who founded Kestrelmark in 2011?"),
    ("Kestrelmark was founded by Ilse Varnholt.", "Ilse Varnholt", "NAME", "Who was Kestrelmark founded by?"),
    ("The company is based in Orrvik.", "Orrvik", "NAME", "Where is the company based?"),
    ("The Romans kept eight legions in five bases.", "eight", "COUNT",
     "How many legions did the Romans keep in five bases?"),
    ("The Tern-3 buoy weighs 42 kg.", "42 kg", "QUANTITY", "How much does the Tern-3 buoy weigh?"),
    ("The Rhine is 1,230 km long.", "1,230 km", "QUANTITY", "How long is the Rhine?"),
    ("The survey lasted for 3 years.", "3 years", "QUANTITY", "How long did the survey last?"),
    ("The biggest city on the Rhine is Cologne.", "Cologne", "NAME", "What is the biggest city on the Rhine?"),
    ("The Middle Rhine flows through the Rhine Gorge.", "Rhine Gorge", "NAME",
     "What does the Middle Rhine flow through?"),
    ("The Rhine, which rises in the Alps, flows into the North Sea.", "North Sea", "NAME",
     "What does the Rhine flow into?"),
    ("In 1946, Poland won the national football championship.", "1946", "DATE",
     "When did Poland win the national football championship?"),
    ("Around 80 avulsions occurred in the last centuries of the delta's history.", "80", "COUNT",
     "How many avulsions occurred in the last centuries of the delta's history?"),
    ("Three rivers drain the plateau.", "Three", "COUNT", "How many rivers drain the plateau?"),
])
def test_english_questions_are_fronted_with_the_right_wh_word(sentence, answer, label, question):
    assert _ask(sentence, answer, label) == question


@pytest.mark.parametrize("sentence, answer, label, question", [
    ("Em 1816, a Universidade de Varsóvia foi fundada.", "1816", "DATE",
     "Quando a Universidade de Varsóvia foi fundada?"),
    ("A universidade foi fundada em 1816.", "1816", "DATE", "Quando a universidade foi fundada?"),
    ("Os romanos mantinham oito legiões ao longo do Reno.", "oito", "COUNT",
     "Quantas legiões os romanos mantinham ao longo do Reno?"),
    ("O Reno tem 1.230 km.", "1.230 km", "QUANTITY", "Quantos quilômetros o Reno tem?"),
    ("A maior cidade do rio Reno é Colônia.", "Colônia", "NAME", "Qual é a maior cidade do rio Reno?"),
    ("Varsóvia é a maior cidade da Polônia.", "Varsóvia", "NAME", "Qual é a maior cidade da Polônia?"),
    ("O rio deságua em Roterdã.", "Roterdã", "NAME", "Onde o rio deságua?"),
    ("Em 1946, a Polonia venceu o campeonato nacional de futebol.", "1946", "DATE",
     "Quando a Polonia venceu o campeonato nacional de futebol?"),
    ("Em 1946, a Polonia venceu o campeonato nacional de futebol.", "Polonia", "NAME",
     "Quem venceu o campeonato nacional de futebol?"),
    ("O Jardim Krasiński foi remodelado por Franciszek Szanior no século XIX.", "Franciszek Szanior", "NAME",
     "Por quem o Jardim Krasiński foi remodelado no século XIX?"),
    ("Ocorreram aproximadamente 80 avulsões nos últimos séculos da história do delta.", "80", "COUNT",
     "Quantas avulsões ocorreram nos últimos séculos da história do delta?"),
    ("Cerca de 80 avulsões ocorreram nos últimos séculos.", "80", "COUNT",
     "Quantas avulsões ocorreram nos últimos séculos?"),
    ("Existem 12 distritos na cidade.", "12", "COUNT", "Quantos distritos existem na cidade?"),
    ("Existem três tipos principais de rocha.", "três", "COUNT", "Quantos tipos principais de rocha existem?"),
])
def test_portuguese_questions_front_the_wh_word_without_inversion(sentence, answer, label, question):
    assert _ask(sentence, answer, label, "pt") == question


@pytest.mark.parametrize("sentence, answer, label, lang", [
    ("The Rhine flows through Germany, France and Switzerland.", "France", "NAME", "en"),  # one item of a list
    ("It was founded in 2011.", "2011", "DATE", "en"),                                     # pronoun subject
    ("The river (which Caesar crossed in 55 BC) is long.", "55", "DATE", "en"),            # inside brackets
    ("The stage was set in the Triassic Period of the Mesozoic Era.", "Era", "NAME", "en"),  # part of a name
    ("The valve, in 2011, Kestrelmark.", "2011", "DATE", "en"),                           # no verb to invert
    ("Germanic tribes crossed the Rhine in the Migration period.", "Migration", "NAME", "en"),  # a modifier
    ("Ele foi fundado em 1816.", "1816", "DATE", "pt"),                                   # pronoun subject
    ("O rio passa por Basileia, Estrasburgo e Mainz.", "Estrasburgo", "NAME", "pt"),      # one item of a list
    ("The city lies near Cologne, Germany.", "Cologne", "NAME", "en"),                     # an apposition
    ("Around 80 of them occurred.", "80", "COUNT", "en"),                                 # no counted noun
    ("Os 80 soldados morreram.", "80", "COUNT", "pt"),                                    # a count after an article
    ("Partners may travel with you at their own cost.", "their own cost", "NP", "en"),  # "at" + a common noun
    ("A seção está em um prédio com 700 leitos.", "700", "COUNT", "pt"),                  # "com N" describes a noun
    ("Os exemplos são o Castelo Real e a Igreja na Cidade Velha.", "Cidade Velha", "NAME", "pt"),  # nominal predicate
])
def test_a_candidate_no_rule_phrases_well_is_dropped(sentence, answer, label, lang):
    assert _ask(sentence, answer, label, lang) is None


@pytest.mark.parametrize("sentence, answer, label, lang, antecedent, question", [
    ("It runs on a 9 Ah battery.", "a 9 Ah battery", "NP", "en", "The Tern-3 buoy",
     "What does the Tern-3 buoy run on?"),
    ("It weighs 48 kg.", "48 kg", "QUANTITY", "en", "The Tern-3 buoy", "How much does the Tern-3 buoy weigh?"),
    ("He founded Kestrelmark in 2011.", "2011", "DATE", "en", "Ilse Varnholt",
     "When did Ilse Varnholt found Kestrelmark?"),
    ("They kept eight legions in five bases.", "eight", "COUNT", "en", "The Romans",
     "How many legions did the Romans keep in five bases?"),
    ("Ele pesa 48 kg.", "48 kg", "QUANTITY", "pt", "O Tern-3", "Quantos quilos o Tern-3 pesa?"),
    ("Ela foi fundada em 2011.", "2011", "DATE", "pt", "A empresa", "Quando a empresa foi fundada?"),
])
def test_a_subject_pronoun_stands_for_its_antecedent(sentence, answer, label, lang, antecedent, question):
    at = sentence.index(answer)
    assert phrase_question(sentence, at, at + len(answer), label, lang, antecedent=antecedent).question == question


@pytest.mark.parametrize("sentence, answer, label, lang, antecedent", [
    ("He weighs 48 kg.", "48 kg", "QUANTITY", "en", "The Tern-3 buoy"),    # a person's pronoun, a thing
    ("They weigh 48 kg.", "48 kg", "QUANTITY", "en", "The Tern-3 buoy"),   # plural pronoun, singular noun
    ("Ela pesa 48 kg.", "48 kg", "QUANTITY", "pt", "O Tern-3"),            # feminine pronoun, masculine noun
])
def test_a_pronoun_that_does_not_agree_is_not_resolved(sentence, answer, label, lang, antecedent):
    at = sentence.index(answer)
    assert phrase_question(sentence, at, at + len(answer), label, lang, antecedent=antecedent) is None


def test_rules_find_fronted_dates_passive_agents_and_subject_counts_in_portuguese():
    qa = synthesize_rules([_chunk("A Universidade de Varsóvia foi fundada em 1816 pelo rei. O Jardim Krasiński foi "
                                  "remodelado por Franciszek Szanior no século XIX.")], "pt", max_per_chunk=10)
    questions = {q.question: q.answer for q in qa}
    assert questions["Quando a Universidade de Varsóvia foi fundada pelo rei?"] == "1816"  # not a count "1816 pelo"
    assert questions["Por quem o Jardim Krasiński foi remodelado no século XIX?"] == "Franciszek Szanior"
    assert all(q.answer not in q.question and looks_like_question(q.question, "pt") for q in qa)


def test_subject_of_a_sentence():
    assert subject_of("The Tern-3 buoy weighs 48 kg.") == "The Tern-3 buoy"
    assert subject_of("In 1911, the Normans reached Normandy.") == ""
    assert subject_of("It runs on a 9 Ah battery.") == ""
    assert subject_of("O Tern-3 pesa 48 kg.", "pt") == "O Tern-3"


def test_rules_resolve_pronouns_and_ask_for_rates_and_final_noun_phrases():
    buoy = "# Tern-3 buoy\n\nThe Tern-3 buoy weighs 48 kg. It runs on a 9 Ah battery."
    sensor = "# Skua-G2\n\nThe Skua-G2 sensor samples every 15 minutes and reports over LoRa."
    items = synthesize_rules([_chunk(buoy, "a.md#0", "Tern-3 buoy"), _chunk(sensor, "b.md#0", "Skua-G2")],
                             max_per_chunk=8)
    firsts = {s.answer: s.question for s in items if s.style == "question"}
    assert firsts["48 kg"] == "How much does the Tern-3 buoy weigh?"
    assert firsts["a 9 Ah battery"] == "What does the Tern-3 buoy run on?"
    assert firsts["15 minutes"] == "How often does the Skua-G2 sensor sample?"
    # with no previous sentence, the heading names what "It" stands for
    alone = synthesize_rules([_chunk("# Tern-3 buoy\n\nIt runs on a 9 Ah battery.", "c.md#0", "Tern-3 buoy")])
    assert [s.question for s in alone if s.style == "question"] == ["What does the Tern-3 buoy run on?"]


def test_rules_keep_answers_verbatim_and_out_of_the_question():
    run = synthesize_rules_run([_chunk()], max_per_chunk=10, wordings=3)
    assert run.pipeline == "blank:en+rules"          # no trained spaCy pipeline here: the rule path ran
    assert run.items, "no questions synthesized"
    for s in run.items:
        assert s.answer in TEXT and s.sentence and s.answer in s.sentence
        assert not answer_in_question(s.question, s.answer)
        assert passes_form(s.question, s.answer, "en", 26), s.question
    firsts = {s.answer: s.question for s in run.items if s.style == "question"}
    assert firsts["42 kg"] == "How much does the Tern-3 buoy weigh?"
    assert firsts["eight"] == "How many legions did the Romans keep in five bases along the Rhine?"
    assert firsts["Orrvik"] == "Where is the company based?"
    assert run.summary()["n_facts"] == len(firsts) and run.summary()["n_wordings"] == len(run.items)
    assert not any(s.question.startswith("Fill in the blank") for s in run.items)


def test_wordings_vary_and_keep_the_form():
    at = TEXT.index("2011")
    phrased = phrase_question("Kestrelmark was founded in 2011 by Ilse Varnholt.", 27, 31, "DATE")
    assert phrased is not None and at
    out = wordings_of(phrased, "2011", "en", 4, seed=0)
    assert out[0] == phrased.question and len(out) == 4 and len(set(out)) == 4
    assert any(w.startswith(("Do you know when", "Can you tell me when", "Could you tell me when",
                             "Do you happen to know when")) for w in out)
    assert "In what year was Kestrelmark founded by Ilse Varnholt?" in out      # a year: the wh-variant
    assert all(passes_form(w, "2011", "en", 30) and "2011" not in w for w in out)
    assert wordings_of(phrased, "2011", "en", 1) == [phrased.question]


def test_form_rules():
    assert looks_like_question("When did the Normans reach Normandy?")
    assert looks_like_question("In how many bases did the Romans keep legions?")
    assert looks_like_question("Quantas legiões os romanos mantinham?", "pt")
    assert not looks_like_question("The Normans reached Normandy when?")           # in situ
    assert not looks_like_question("Fill in the blank: The Normans reached ____.")
    assert not looks_like_question("When did the Normans reach Normandy")          # no question mark
    assert answer_in_question("Who founded Kestrelmark in 2011?", "2011")
    assert not answer_in_question("Who founded Kestrelmark?", "Kestrel")


def test_table_rows_of_key_value_tables_become_questions():
    text = "| Field | Value |\n|---|---|\n| Lead engineer | Sølvi Brekke |\n| Mass | 86 kg |"
    qs = {s.question: s.answer for s in synthesize_rules([_chunk(text, heading="Tern-3 specification")])}
    assert qs["What is the lead engineer of Tern-3 specification?"] == "Sølvi Brekke"
    assert qs["What is the mass of Tern-3 specification?"] == "86 kg"
    other = "| Time | Event |\n|---|---|\n| 09:00 | Alarm |"
    assert synthesize_rules([_chunk(other, heading="Timeline")]) == []


def test_paraphrases_of_gold_questions_are_distinct_and_new():
    q = "What is the maximum frame size in KTP v3?"
    ps = paraphrase_question(q, 4)
    assert len(ps) == 4 and len(set(ps)) == 4 and q not in ps
    assert all("KTP v3" in p for p in ps)
    assert paraphrase_question(q, 4) == ps
    assert paraphrase_question(q, 0) == []


def test_model_pairs_are_kept_only_with_a_verbatim_answer_and_the_form():
    reply = ("1. Q: How much does the Tern-3 buoy weigh?\nP: What is the mass of the Tern-3 buoy?\nA: 42 kg.\n"
             "Q: Who founded Kestrelmark in 2011?\nA: Someone Else\n"          # not in the chunk
             "Question: Where?\nAnswer: Orrvik\n"                              # too short to be a question
             "Q: When was Kestrelmark founded in 2011?\nA: 2011\n")            # answer inside the question
    assert parse_qa_pairs(reply)[0] == ("How much does the Tern-3 buoy weigh?", "42 kg")
    assert parse_qa_blocks(reply)[0] == (["How much does the Tern-3 buoy weigh?",
                                          "What is the mass of the Tern-3 buoy?"], "42 kg")
    calls = []

    def fake(prompts):
        calls.append(prompts)
        return [reply for _ in prompts]

    out = synthesize_llm([_chunk()], fake, per_chunk=4, wordings=2)
    assert [(s.question, s.answer) for s in out] == [("How much does the Tern-3 buoy weigh?", "42 kg"),
                                                     ("What is the mass of the Tern-3 buoy?", "42 kg")]
    assert TEXT in calls[0][0] and "1 other wordings" in calls[0][0]


# --- the served backend against a fake OpenAI-compatible server -----------------------------------

REPLY = ("Q: How much does the Tern-3 buoy weigh?\nP: What does the Tern-3 buoy weigh?\nP: What is the Tern-3's "
         "mass?\nA: 42 kg\nQ: Who founded Kestrelmark?\nA: Ilse Varnholt\nQ: What is the speed?\nA: 9 knots\n")


class _FakeOpenAI(BaseHTTPRequestHandler):
    def _send(self, obj):
        out = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, None, self.headers.get("Authorization")))
        self._send({"object": "list", "data": [{"id": "writer-7b", "object": "model"}]})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, body, self.headers.get("Authorization")))
        self._send({"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": REPLY}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 40}})

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_served_backend_writes_questions_and_paraphrases(fake_server, monkeypatch):
    monkeypatch.setenv("SYNTH_KEY", "k")
    cfg = SynthConfig(backend="openai", base_url=f"http://127.0.0.1:{fake_server.server_port}/v1",
                      api_key_env="SYNTH_KEY", wordings=3)
    made = synthesize([_chunk()], cfg, "en")
    assert made.backend == "openai" and made.pipeline == "writer-7b"   # the server's first model is named
    assert [(s.question, s.answer) for s in made.items] == [
        ("How much does the Tern-3 buoy weigh?", "42 kg"), ("What does the Tern-3 buoy weigh?", "42 kg"),
        ("What is the Tern-3's mass?", "42 kg"), ("Who founded Kestrelmark?", "Ilse Varnholt")]
    assert made.summary()["n_facts"] == 2 and made.summary()["n_wordings"] == 4
    posts = [(p, b, a) for p, b, a in fake_server.seen if b is not None]
    path, body, auth = posts[0]
    assert path == "/v1/chat/completions" and body["model"] == "writer-7b" and auth == "Bearer k"
    assert TEXT in body["messages"][0]["content"]


def test_served_backend_down_is_one_clear_error():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    port = server.server_port
    server.server_close()                                 # nothing listens there now
    with pytest.raises(WorkbenchError, match="unreachable"):
        synthesize([_chunk()], SynthConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1"), "en")
    with pytest.raises(WorkbenchError, match="needs synth.base_url"):
        SynthConfig(backend="openai")


# --- the synth command -----------------------------------------------------------------------------

@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "buoy.md").write_text("# Tern-3\n\n" + TEXT + "\n", encoding="utf-8")
    (root / "qa.jsonl").write_text(json.dumps({"id": "e1", "question": "What does the Tern-3 weigh?",
                                               "answers": ["42 kg"], "split": "eval"}) + "\n", encoding="utf-8")
    return root


def test_synth_cli_writes_jsonl_and_prints_a_sample(corpus, tmp_path, home):
    out = tmp_path / "synth.jsonl"
    res = CliRunner().invoke(app, ["synth", str(corpus), "--out", str(out), "-q", "--sample", "2",
                                   "--wordings", "2"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows and {"question", "answer", "sentence", "doc", "fact_id", "style"} <= set(rows[0])
    assert all(r["answer"] in r["sentence"] and not answer_in_question(r["question"], r["answer"]) for r in rows)
    assert "What does the Tern-3 weigh?" not in {r["question"] for r in rows}  # eval questions are never read
    assert f"-> {out}" in res.output and "blank:en+rules" in res.output
    assert "from: " in res.output and any(r["question"] in res.output for r in rows)


def test_synth_cli_refuses_bad_input(corpus, tmp_path, home):
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(app, ["synth", str(corpus), "--out", str(tmp_path / "x.jsonl"), "--backend", "openai"])
    assert res.exit_code == 2 and "synth.base_url" in res.output
    assert not (tmp_path / "x.jsonl").exists()


def test_training_data_counts_facts_and_wordings(tiny_corpus, tiny_lm_dir, home):
    from transformers import AutoTokenizer

    from workbench.core.config import FinetuneConfig, RunConfig
    from workbench.training.trainset import build_training_data

    run_cfg = RunConfig(synth=SynthConfig(wordings=3))
    data = build_training_data(tiny_corpus, FinetuneConfig(synthesize="always", paraphrases=0,
                                                           heldout_fraction=0.0),
                               AutoTokenizer.from_pretrained(tiny_lm_dir), run_cfg=run_cfg)
    counts = data.counts()
    assert counts["synthesis"]["backend"] == "rules" and counts["synthesis"]["pipeline"] == "blank:en+rules"
    assert counts["by_source"]["gold"] == 2 and counts["by_source"]["synth"] >= 2
    assert counts["n_wordings"] == len(data.train) and counts["n_facts"] < counts["n_wordings"]


@pytest.mark.slow
@pytest.mark.parametrize("corpus_dir, lang", [
    (REPO / "corpora" / "demo", "en"),
    (REPO.parent / "shared" / "corpora" / "squad-en-dev", "en"),
    (REPO.parent / "shared" / "corpora" / "squad-pt-dev", "pt"),
])
def test_every_question_synthesized_from_real_text_keeps_the_form(corpus_dir, lang):
    """Rule path only (no model): every question opens like one, ends with "?", stays within the length limit
    and never holds its answer; the demo synthesizes within 30 s."""
    import time

    from workbench.core.config import IngestConfig
    from workbench.corpus.ingest import ingest_corpus

    if not corpus_dir.exists():
        pytest.skip(f"{corpus_dir} is not here")
    chunks = ingest_corpus(corpus_dir, IngestConfig(language=lang), progress=False).chunks
    t = time.perf_counter()
    made = synthesize(chunks, SynthConfig(), lang)
    assert time.perf_counter() - t <= 30
    assert made.n_facts >= 30
    for s in made.items:
        assert passes_form(s.question, s.answer, lang, 26), s.question
        assert s.answer in s.sentence or s.style == "table"
