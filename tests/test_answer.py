"""The grounded-answering prompt, answer cleaning, abstention, citations and batched answering."""
from __future__ import annotations

import re

import pytest

from workbench.answering import answer as A
from workbench.answering import postprocess as PP
from workbench.answering import prompt as P
from workbench.answering.generate import Generation
from workbench.core import text as T
from workbench.core.config import GenerateConfig, PromptConfig
from workbench.core.records import Chunk, Hit
from workbench.corpus.chunking import split_sentences

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def hit(n: int, text: str, doc: str = "buoy.md", heading: str = "") -> Hit:
    return Hit(Chunk(f"{doc}#{n}", text, doc, (0, len(text)), heading), score=1.0 / n, rank=n)


HITS = [hit(1, "The Tern-3 buoy weighs 42 kg. It runs on a 9 Ah battery.", heading="Tern-3"),
        hit(2, "Ilse Varnholt leads Kestrelmark Instruments.", doc="sub/people.txt"),
        hit(3, "Economy class is required for flights under 6 hours.", doc="page.html")]


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def test_closed_book_prompt():
    msgs = P.build_messages("How heavy is the Tern-3?", None)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == P.SYSTEM_CLOSED
    assert msgs[1]["content"] == "Question: How heavy is the Tern-3?"
    assert T.ABSTAIN in msgs[0]["content"]


def user_turn(msgs):
    """The (last) user message of a prompt; a RAG prompt ends with the opened assistant reply."""
    return [m for m in msgs if m["role"] == "user"][-1]


def test_passages_are_numbered_in_rank_order(tok):
    msgs, used = P.build_prompt("How heavy is the Tern-3?", HITS, tok)
    user = user_turn(msgs)["content"]
    assert msgs[0]["content"] == P.SYSTEM_RAG and msgs[-2]["role"] == "user"
    assert re.findall(r"^\[(\d)\] \(([^)]*)\)", user, re.M) == [
        ("1", "buoy.md › Tern-3"), ("2", "sub/people.txt"), ("3", "page.html")]
    assert user.index("42 kg") < user.index("Varnholt") < user.index("Economy")
    assert user.rstrip().endswith("Question: How heavy is the Tern-3?")
    assert used == HITS
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]  # no worked examples by default
    assert msgs[-1]["content"] == PromptConfig().reply_start


def test_rag_reply_is_opened_and_rendered_open(tok):
    from workbench.answering.generate import render_prompt

    msgs = P.build_messages("How heavy is the Tern-3?", HITS, tok)
    text = render_prompt(tok, msgs)
    start = PromptConfig().reply_start
    assert start and text.endswith(start)  # the model continues the reply, no end of turn
    assert text.count("<|im_start|>assistant") == 1
    plain = P.build_messages("How heavy is the Tern-3?", HITS, tok, cfg=PromptConfig(reply_start=""))
    assert plain[-1]["role"] == "user" and render_prompt(tok, plain).endswith("<|im_start|>assistant\n")


def test_worked_examples_and_question_first(tok):
    cfg = PromptConfig(few_shot=3, question_first=True)
    msgs, _ = P.build_prompt("How heavy is the Tern-3?", HITS, tok, context_tokens=4096, cfg=cfg)
    assert [m["role"] for m in msgs] == (["system"] + ["user", "assistant"] * len(P.WORKED_EXAMPLES)
                                         + ["user", "assistant"])
    assert msgs[2]["content"] == P.WORKED_EXAMPLES[0][2] and msgs[1]["content"].startswith("Question: ")
    assert user_turn(msgs)["content"].startswith("Question: How heavy is the Tern-3?\n\nPassages:\n[1]")
    # a tight budget goes to the passages: the examples are dropped
    tight, used = P.build_prompt("How heavy is the Tern-3?", HITS, tok, context_tokens=450, cfg=cfg)
    assert [m["role"] for m in tight] == ["system", "user", "assistant"] and used


def test_prompt_fits_the_budget(tok):
    from workbench.answering.generate import render_prompt

    long = " ".join(f"The buoy number {i} weighs {i} kg and runs on a battery." for i in range(200))
    hits = [hit(i, long) for i in range(1, 6)]
    cfg = PromptConfig(passage_sentences=0)  # whole chunks, so the budget has to cut them
    for budget in (400, 700, 1200):
        msgs, used = P.build_prompt("How heavy is buoy 7?", hits, tok, context_tokens=budget, cfg=cfg)
        n = len(tok(render_prompt(tok, msgs), add_special_tokens=False)["input_ids"])
        assert n <= budget - cfg.answer_reserve
        assert 1 <= len(used) < len(hits)
        assert user_turn(msgs)["content"].count("…") == 1  # the last passage that fits is cut, not dropped
    small, _ = P.build_prompt("q?", hits, tok, context_tokens=400, cfg=cfg)
    big, _ = P.build_prompt("q?", hits, tok, context_tokens=1200, cfg=cfg)
    assert len(user_turn(big)["content"]) > len(user_turn(small)["content"])


def test_prompt_without_tokenizer_estimates_tokens():
    long = "word " * 3000
    msgs, used = P.build_prompt("q?", [hit(1, long), hit(2, long)], None, context_tokens=1000)
    assert len(used) == 1
    assert sum(len(m["content"]) for m in msgs) < 4 * 1000


def test_focus_keeps_the_matching_sentences_in_order():
    text = ("Kestrelmark was founded in 2011. The Tern-3 hull is 1.15 m wide. The canteen opens at noon. "
            "The Tern-3 buoy has a mass of 86 kg. Parking is free.")
    out = P.focus_passages("What is the mass of the Tern-3 buoy?", [text, "Short one."], 2)
    assert out == ["The Tern-3 hull is 1.15 m wide. The Tern-3 buoy has a mass of 86 kg.", "Short one."]
    assert P.focus_passages("q", [text], 0) == [text]
    assert split_sentences("# Title\n| a | b |\nOne. Two!") == ["# Title", "| a | b |", "One.", "Two!"]


@pytest.mark.parametrize("raw, clean", [
    ("42 kg.", "42 kg"),
    ("  42 kg\nThe buoy is heavy.", "42 kg"),
    ("Answer: 42 kg", "42 kg"),
    ("Question: How heavy?\nAnswer: 42 kg", "42 kg"),
    ("The answer is: 12.", "12"),
    ("**Ilse Varnholt** [1]", "Ilse Varnholt"),
    ("1. Rafał Wójcik, Calibration Lead", "Rafał Wójcik, Calibration Lead"),
    ("The Tern-3 weighs 42 kg. It is heavy.", "The Tern-3 weighs 42 kg"),
    ("Dr. Berg leads it. Since 2019.", "Dr. Berg leads it"),
    ("KOS v4.2.1 fixed it", "KOS v4.2.1 fixed it"),
    ('"Sennaja Hall"', "Sennaja Hall"),
    ("", ""),
])
def test_clean_answer(raw, clean):
    assert PP.clean_answer(raw) == clean


@pytest.mark.parametrize("raw, question, clean", [
    ("The product owner of the Skua-G2 is Ingeborg Nåvik.", "Who is the product owner of the Skua-G2?",
     "Ingeborg Nåvik"),
    ("The ingest gateways listen for KTP v3 traffic on port 4817", "On what port do the ingest gateways listen "
     "for KTP v3 traffic?", "4817"),
    ("Peoplewell is where you enter your bank details", "Which system sends new starters an invitation?",
     "Peoplewell is where you enter your bank details"),
    ("Peoplewell is the system that sends new starters an invitation", "Which system sends new starters an "
     "invitation?", "Peoplewell"),
    ("The third support contract level is Level 4, designed for the leadership team", "Which support contract "
     "level is designed for the leadership?", "Level 4"),
    ("42 kg", "How much does the Tern-3 weigh?", "42 kg"),
    ("Tern-3 weighs 42 kg", "How much does the Tern-3 weigh?", "42 kg"),
    ("I don't know.", "Who runs the depot?", "I don't know"),
])
def test_clean_answer_drops_the_echoed_question(raw, question, clean):
    assert PP.clean_answer(raw, question) == clean


@pytest.mark.parametrize("text", ["I don't know", "I do not know.", "I don’t know the answer",
                                  "The passages do not mention it.", "This is not mentioned in the passages.",
                                  "There is no information about that.", "Unknown", "", "   "])
def test_abstentions(text):
    assert T.is_abstention(text)


@pytest.mark.parametrize("text", ["42 kg", "Ilse Varnholt", "The unknown sensor is the KM-7", "No. 7 pier",
                                  "Know-how transfer programme", "none of the above, only KS-211"])
def test_answers_are_not_abstentions(text):
    assert not T.is_abstention(text)


def test_citations_from_markers_then_containment():
    cites = PP.cite("Ilse Varnholt [2]", HITS)
    assert [(c.n, c.doc, c.chunk_id) for c in cites] == [(2, "sub/people.txt", "sub/people.txt#2")]
    cites = PP.cite("42 kg", HITS)
    assert [(c.n, c.doc, c.heading) for c in cites] == [(1, "buoy.md", "Tern-3")]
    assert PP.cite("I don't know [1]", HITS) == []
    assert PP.cite("17 parsecs", HITS) == []
    assert PP.cite("[9] 42 kg", HITS)[0].n == 1  # an out-of-range marker is ignored


class FakeGenerator:
    """Records prompts; replies with canned raw text (shape of workbench.answering.generate.Generator)."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.cfg, self.seen = tokenizer, replies, GenerateConfig(), []

    def generate(self, conversations, progress=False, stop=(), sources=None):
        self.seen.append((conversations, tuple(stop)))
        self.sources = sources
        return [Generation(r, 10, 3, 0.5) for r in self.replies[: len(conversations)]]


class FakeRetriever:
    language = "en"

    def __init__(self):
        self.calls = []

    def search_batch(self, queries, k=None):
        self.calls.append((list(queries), k))
        return [HITS[: k or 3] for _ in queries]


def test_answer_questions_with_retrieval(tok):
    gen = FakeGenerator(tok, ["42 kg. The buoy is heavy.", "I don't know"])
    ret = FakeRetriever()
    out = A.answer_questions(["How heavy is the Tern-3?", "Top speed?"], gen, retriever=ret, k=2)
    assert ret.calls == [(["How heavy is the Tern-3?", "Top speed?"], 2)]
    assert [a.text for a in out] == ["42 kg", "I don't know"]
    assert out[0].hits == HITS[:2] and [c.n for c in out[0].citations] == [1]
    assert out[1].citations == [] and T.is_abstention(out[1].text)
    assert out[0].raw == "42 kg. The buoy is heavy." and out[0].n_new_tokens == 3
    assert out[0].latency_s >= 0.5
    convs, stop = gen.seen[0]
    assert stop == P.ANSWER_STOPS and "[2]" in user_turn(convs[0])["content"]
    assert "[3]" not in user_turn(convs[0])["content"]
    # replies are copied from the passages' sentences (three here, all kept) or the abstention
    assert [s.text for s in gen.sources[0][:-1]] == split_sentences(HITS[0].chunk.text + " " + HITS[1].chunk.text)
    assert gen.sources[0][-1].text == T.ABSTAIN and not gen.sources[0][-1].no_start
    assert {"heavy", "tern-3", "the"} <= gen.sources[0][0].no_start  # no span starts with an echo or a stopword


def test_answer_questions_closed_book(tok):
    gen = FakeGenerator(tok, ["Orrvik"])
    out = A.answer_questions(["Where is Kestrelmark?"], gen)
    assert out[0].hits == [] and out[0].citations == [] and out[0].text == "Orrvik"
    assert gen.seen[0][0][0] == P.build_messages("Where is Kestrelmark?", None, tok)
    assert gen.sources is None  # closed book generates freely


def test_answer_questions_with_the_tiny_model(tiny_lm_dir):
    from workbench.answering.generate import Generator
    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig

    model, tok = load_base_model(ModelConfig(base_model=str(tiny_lm_dir)))
    gen = Generator(model, tok, GenerateConfig(max_new_tokens=6, batch_size=2))
    out = A.answer_questions(["How heavy?", "Who leads it?", "Where?"], gen, retriever=FakeRetriever(), k=1)
    assert len(out) == 3 and all(isinstance(a.text, str) and "\n" not in a.text for a in out)
    assert all(len(a.hits) == 1 and 0 <= a.n_new_tokens <= 6 for a in out)


def test_check_question():
    from workbench.core.errors import WorkbenchError

    assert A.check_question("  Weight?  ") == "Weight?"
    with pytest.raises(WorkbenchError, match="empty"):
        A.check_question("   ")
    with pytest.raises(WorkbenchError, match="too long"):
        A.check_question("x" * (A.MAX_QUESTION_CHARS + 1))


def test_format_answer_lists_sources_and_latency():
    a = A.Answer("How heavy?", "42 kg", HITS[:2], PP.cite("42 kg", HITS[:2]), 1.25, 5)
    text = A.format_answer(a)
    assert text.splitlines()[0] == "42 kg"
    assert " *[1] buoy.md › Tern-3" in text and "  [2] sub/people.txt" in text
    assert "latency 1.25 s, 5 new tokens (4.0 tokens/s)" in text


def test_best_passage_last_keeps_rank_numbers(tok):
    msgs, used = P.build_prompt("How heavy is the Tern-3?", HITS, tok, cfg=PromptConfig(best_passage_last=True))
    assert re.findall(r"^\[(\d)\]", user_turn(msgs)["content"], re.M) == ["3", "2", "1"]
    assert used == HITS


@pytest.mark.parametrize("raw, question, clean", [
    ("The executive who signed off on the largest expense claims is the Chief Financial Officer, Matthias Oduya.",
     "Which executive signs off on the largest expense claims?", "Matthias Oduya"),
    ("A full-time employee receives 27 days of paid vacation per calendar year.",
     "How much paid vacation per calendar year does a full-time employee receive?", "27 days"),
    ("The answer to this question is: 6 months.", "How long is the trial period?", "6 months"),
    ("[1] (web/support-portal.html › Kestrel Care) Kestrel Care", "Which portal do customers use?", "Kestrel Care"),
    ("The system that holds traveller profiles is a service called TrailDesk",
     "What is the name of the system that holds traveller profiles?", "TrailDesk"),
])
def test_clean_answer_more_echo_shapes(raw, question, clean):
    assert PP.clean_answer(raw, question) == clean


def test_copy_sources_keep_the_sentences_closest_to_the_question():
    from rag_fakes import StubEmbedder

    hits = [hit(1, "The buoy is yellow. Its battery holds 9 Ah. The hull is foam."),
            hit(2, "Ilse Varnholt leads Kestrelmark. The battery charger is grey.")]
    q = "How many Ah does the battery hold?"
    for embedder in (StubEmbedder(dim=2048), None):  # embedding similarity, or idf overlap without an embedder
        (sources,) = P.copy_sources([q], [hits], embedder, PromptConfig(copy_sentences=2))
        assert [s.text for s in sources[:-1]] == ["Its battery holds 9 Ah.", "The battery charger is grey."]
        assert sources[-1].text == T.ABSTAIN and not sources[-1].no_start  # "I" may start the reply
        assert all(s.no_start >= {"battery", "ah", "the", "how"} for s in sources[:-1])
    (whole,) = P.copy_sources([q], [hits], StubEmbedder(), PromptConfig(copy_sentences=0))
    assert [s.text for s in whole[:-1]] == [h.chunk.text for h in hits]


def test_clean_answer_completes_a_quantity_from_the_passages():
    passages = ["Battery: the pack lasts 19 days without sun. The wiper runs every 6 hours."]
    assert PP.clean_answer("19", "How long does the pack last?", passages) == "19 days"
    assert PP.clean_answer("19", "How long does the pack last?") == "19"  # no passages: as replied
    assert PP.clean_answer("I don't know", "How long?", passages) == "I don't know"
