"""Batched generation on the tiny random LM: batching, left padding, stop criteria, streaming."""
from __future__ import annotations

import pytest

from workbench.core.config import GenerateConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = [
    "How much does the Tern-3 weigh?",
    "Who leads Kestrelmark Instruments in Orrvik, and since when has the company been there?",
    "Calibrate?",
    "What battery does the buoy run on?",
    "Replace the anode every how many months, and which grease goes on the seals of the Tern-3 buoy?",
    "Economy class?",
]


def conv(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny Llama of ``tiny_models``, but with larger random weights so greedy replies vary from token to token
    (at the default init it repeats one token, which would make these comparisons vacuous)."""
    from tiny_models import build_tiny_lm

    from workbench.answering.models import load_base_model
    from workbench.core.config import ModelConfig

    path = build_tiny_lm(tmp_path_factory.mktemp("chatty-lm") / "model", seed=1, init_range=0.5)
    return load_base_model(ModelConfig(base_model=str(path)))


def make(tiny, **kw):
    from workbench.answering.generate import Generator

    model, tok = tiny
    return Generator(model, tok, GenerateConfig(**{"max_new_tokens": 12, **kw}))


def test_batched_matches_sequential_greedy(tiny):
    batched = make(tiny, batch_size=4).generate([conv(q) for q in QUESTIONS])
    single = [make(tiny, batch_size=1).generate([conv(q)])[0] for q in QUESTIONS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.n_new_tokens for g in batched] == [g.n_new_tokens for g in single]
    assert [g.n_prompt_tokens for g in batched] == [g.n_prompt_tokens for g in single]
    assert all(g.n_new_tokens > 0 for g in batched)
    assert len({g.text for g in batched}) == len(QUESTIONS)  # real, distinct replies
    # prompts differ in length, so batches of 4 needed left padding
    assert len({g.n_prompt_tokens for g in batched}) > 1


def test_batches_respect_the_prompt_and_token_caps(tiny, monkeypatch):
    gen = make(tiny, batch_size=4, batch_tokens=60)
    lengths = [10, 10, 12, 15, 15, 20, 30, 70]
    batches = list(gen.batches(lengths, list(range(len(lengths)))))
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # order kept, nothing lost
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60  # an over-long prompt goes alone
    assert batches[0] == [0, 1, 2, 3] and batches[-1] == [7]
    # and generation runs exactly those batches, with the same replies as one at a time
    calls = []
    real = gen.model.generate
    monkeypatch.setattr(gen.model, "generate", lambda **kw: calls.append(kw["input_ids"].shape) or real(**kw))
    convs = [conv(q) for q in QUESTIONS]
    out = gen.generate(convs)
    assert len(calls) > 1 and all(r * w <= 60 or r == 1 for r, w in calls)
    assert [g.text for g in out] == [g.text for g in make(tiny, batch_size=1).generate(convs)]


def test_outputs_come_back_in_input_order(tiny):
    gen = make(tiny, batch_size=2)
    qs = list(reversed(QUESTIONS))
    out = gen.generate([conv(q) for q in qs])
    lengths = [len(gen.encode(conv(q))) for q in qs]
    assert [g.n_prompt_tokens for g in out] == lengths


def test_left_padding_and_pad_token(tiny_lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.answering.generate import Generator

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tok.padding_side = "right"
    tok.pad_token = None
    Generator(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), tok, GenerateConfig(max_new_tokens=4))  # fixes tok up
    assert tok.padding_side == "left"
    assert tok.pad_token == tok.eos_token


def test_eos_stops_generation(tiny):
    model, tok = tiny
    free = make(tiny, max_new_tokens=10)
    ids = free.encode(conv(QUESTIONS[0]))
    import torch

    with torch.inference_mode():
        seq = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    new = seq[0, len(ids):].tolist()
    stop_tok = next(t for j, t in enumerate(new) if j >= 2 and t not in new[:j])
    where = new.index(stop_tok)
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop_tok
    try:
        g = make(tiny, max_new_tokens=10).generate([conv(QUESTIONS[0])])[0]
    finally:
        model.generation_config.eos_token_id = old
    assert g.n_new_tokens == where
    assert g.text == tok.decode(new[:where], skip_special_tokens=True).strip()


def test_stop_string_cuts_the_reply(tiny):
    full = make(tiny, max_new_tokens=16).generate([conv(QUESTIONS[1])])[0].text
    assert len(full) > 4
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assume = full.find(stop)
    g = make(tiny, max_new_tokens=16).generate([conv(QUESTIONS[1])], stop=[stop])[0]
    assert g.text == full[:assume].strip()
    assert stop not in g.text


def test_stream_yields_the_generated_text(tiny):
    gen = make(tiny, max_new_tokens=16)
    for q in QUESTIONS[:3]:
        pieces = list(gen.stream(conv(q)))
        assert len(pieces) >= 1
        assert "".join(pieces) == gen.generate([conv(q)])[0].text
    full = gen.generate([conv(QUESTIONS[1])])[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert "".join(gen.stream(conv(QUESTIONS[1]), stop=[stop])) == \
        gen.generate([conv(QUESTIONS[1])], stop=[stop])[0].text


def test_long_prompt_is_left_truncated(tiny):
    gen = make(tiny, max_new_tokens=8)
    ids = gen.encode(conv("buoy " * 3000))
    assert len(ids) == gen.window() - 8
    assert gen.window() == 1024
    assert gen.generate([conv("buoy " * 3000)])[0].n_prompt_tokens == 1016


def test_sampling_is_seeded(tiny):
    import torch

    gen = make(tiny, temperature=1.0, max_new_tokens=8)
    torch.manual_seed(1)
    a = gen.generate([conv(QUESTIONS[0])])[0].text
    torch.manual_seed(1)
    b = gen.generate([conv(QUESTIONS[0])])[0].text
    assert a == b


def test_plain_prompt_without_chat_template(tiny_lm_dir):
    from transformers import AutoTokenizer

    from workbench.answering.generate import render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    tok.chat_template = None
    text = render_prompt(tok, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weight?"}])
    assert text == "Be brief.\n\nQuestion: Weight?\nAnswer:"
    tok2 = AutoTokenizer.from_pretrained(tiny_lm_dir)
    chat = render_prompt(tok2, [{"role": "user", "content": "Weight?"}])
    assert chat == "<|im_start|>user\nWeight?<|im_end|>\n<|im_start|>assistant\n"


def test_cut_at_stop():
    from workbench.answering.generate import cut_at_stop

    assert cut_at_stop("42 kg\nmore", ["\n"]) == ("42 kg", True)
    assert cut_at_stop("42 kg", ["\n"]) == ("42 kg", False)
    assert cut_at_stop("a. b\nc", ["\n", ". "]) == ("a", True)


# --- copy-constrained decoding ---------------------------------------------------------------------

PASSAGES = [["The Tern-3 buoy weighs 42 kg and runs on a 9 Ah battery.", "I don't know"],
            ["Ilse Varnholt is the chief executive of Kestrelmark Instruments in Orrvik.", "I don't know"],
            ["Calibrate the conductivity probe every 30 days.", "I don't know"]]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_copy_constrained_replies_are_spans_of_their_sources(tiny):
    gens = make(tiny, batch_size=3, max_new_tokens=8).generate([conv(q) for q in QUESTIONS[:3]],
                                                                sources=PASSAGES)
    free = make(tiny, batch_size=3, max_new_tokens=8).generate([conv(q) for q in QUESTIONS[:3]])
    assert all(g.n_new_tokens > 0 for g in gens)
    for g, texts in zip(gens, PASSAGES):
        assert any(g.text in _flat(t) for t in texts), (g.text, texts)
    assert any(not any(f.text in _flat(t) for t in texts) for f, texts in zip(free, PASSAGES))  # it did constrain


def test_copy_constrained_batched_matches_sequential_and_stream(tiny):
    convs = [conv(q) for q in QUESTIONS[:3]]
    batched = make(tiny, batch_size=3).generate(convs, sources=PASSAGES)
    single = [make(tiny, batch_size=1).generate([c], sources=[s])[0] for c, s in zip(convs, PASSAGES)]
    assert [g.text for g in batched] == [g.text for g in single]
    streamed = "".join(make(tiny).stream(convs[1], sources=PASSAGES[1]))
    assert streamed == batched[1].text


def test_span_copy_processor_follows_one_span_and_ends_only_between_words(tiny_lm_dir):
    import torch
    from transformers import AutoTokenizer

    from workbench.answering.copying import SpanCopyProcessor

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    src = "the buoy weighs 42 kg"
    ids = tok(" " + src, add_special_tokens=False)["input_ids"]
    end = tok.eos_token_id
    proc = SpanCopyProcessor(tok, [["1. " + src]], prompt_width=2, end_ids=[end])
    prompt = torch.tensor([[5, 6]])

    def allowed(input_ids):
        scores = proc(input_ids, torch.zeros(1, len(tok)))
        return set(torch.nonzero(scores[0] > float("-inf")).flatten().tolist())

    first = allowed(prompt)
    assert ids[0] in first and end not in first  # a word of the source may start; not an empty reply
    assert not {i for i in tok("1", add_special_tokens=False)["input_ids"]} & first  # the list marker is layout
    bare = tok(src.split()[1], add_special_tokens=False)["input_ids"]
    if len(bare) == 1:  # the space-less spelling of a word may start a reply too
        assert bare[0] in first
    seq = prompt
    for i, t in enumerate(ids):
        seq = torch.cat([seq, torch.tensor([[t]])], dim=1)
        nxt = allowed(seq)
        if i + 1 == len(ids):
            assert nxt == {end}
        else:  # the reply may stop only where the next token starts a new word ("4" "2" stays whole)
            between_words = tok.decode([ids[i + 1]])[:1].isspace()
            assert nxt == ({ids[i + 1], end} if between_words else {ids[i + 1]})


def test_span_copy_processor_gives_a_dead_end_back_to_the_model(tiny_lm_dir):
    import torch
    from transformers import AutoTokenizer

    from workbench.answering.copying import SpanCopyProcessor

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = tok(" 42 kg", add_special_tokens=False)["input_ids"]
    proc = SpanCopyProcessor(tok, [["42 kg"]], prompt_width=1, end_ids=[])  # nothing may end the reply
    seq = torch.tensor([[5] + ids])
    for n in range(1, len(ids) + 1):  # replay the span token by token
        proc(seq[:, :1 + n - 1], torch.zeros(1, len(tok)))
    scores = torch.randn(1, len(tok))
    out = proc(seq, scores)  # the span is complete and cannot end: no token left
    assert torch.equal(out, scores) and proc.rows[0].free


def test_span_copy_processor_never_starts_at_a_banned_word(tiny_lm_dir):
    import torch
    from transformers import AutoTokenizer

    from workbench.answering.copying import CopySource, SpanCopyProcessor, no_start_words

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    q = "How heavy is the buoy?"
    assert no_start_words(q, frozenset({"is"})) == {"how", "heavy", "is", "the", "buoy"}
    src = CopySource("the buoy weighs 42 kg", no_start_words(q))
    proc = SpanCopyProcessor(tok, [[src, "I don't know"]], prompt_width=1, end_ids=[tok.eos_token_id])
    first = set(torch.nonzero(proc(torch.tensor([[5]]), torch.zeros(1, len(tok)))[0] > float("-inf")).flatten().tolist())

    def start(word):
        return tok(" " + word, add_special_tokens=False)["input_ids"][0]

    assert {start("weighs"), start("42"), start("kg")} <= first
    assert not {start("the"), start("buoy")} & first
    assert tok("I", add_special_tokens=False)["input_ids"][0] in first  # a plain source has no banned words


def test_span_copy_processor_adds_the_start_prior_of_each_source(tiny_lm_dir):
    import torch
    from transformers import AutoTokenizer

    from workbench.answering.copying import CopySource, SpanCopyProcessor

    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    w42, kg = (tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("42", "kg"))
    proc = SpanCopyProcessor(tok, [[CopySource("42 kg", bias=-3.0), CopySource("kg 7", bias=-1.0), "kg"]],
                             prompt_width=1, end_ids=[])
    scores = proc(torch.tensor([[5]]), torch.zeros(1, len(tok)))[0]
    assert scores[w42].item() == -3.0  # starts only in the first source
    assert scores[kg].item() == 0.0  # starts in all three: the largest prior counts
    seq = torch.tensor([[5, w42]])
    assert proc(seq, torch.zeros(1, len(tok)))[0][kg].item() == 0.0  # later tokens carry no prior


@pytest.mark.parametrize("text, copyable", [
    ("1. Check the seals", "Check the seals"), ("2) Dry the hull", "Dry the hull"), ("## 3.1. Scope", "Scope"),
    ("- KS-104 course", "KS-104 course"), ("42 kg without mooring", "42 kg without mooring"),
    ("3.5 kWh pack\n  fitted", "3.5 kWh pack fitted")])
def test_source_text_drops_layout_but_keeps_leading_numbers(text, copyable):
    from workbench.answering.copying import source_text

    assert source_text(text) == copyable


def test_stream_stops_at_the_next_token_when_cancelled_or_closed(tiny):
    import threading

    gen = make(tiny, max_new_tokens=400)
    whole: dict = {}
    list(gen.stream(conv(QUESTIONS[1]), stats=whole))
    assert len(whole["logprobs"]) > 40  # the uncancelled reply runs long

    cancel, stats = threading.Event(), {}
    pieces = []
    for piece in gen.stream(conv(QUESTIONS[1]), stats=stats, cancel=cancel):
        pieces.append(piece)
        if len(pieces) == 2:
            cancel.set()
    assert len(stats["logprobs"]) < len(whole["logprobs"]) // 2

    closed: dict = {}
    stream = gen.stream(conv(QUESTIONS[1]), stats=closed)
    next(stream)
    stream.close()  # the reader went away: generation has stopped when close returns
    assert 0 < len(closed["logprobs"]) < len(whole["logprobs"]) // 2
