"""Training examples: eval-identical prompts, answer-only loss, packing isolation, leakage guard."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.core.records import Chunk, Hit
from workbench.corpus.qa import QAItem
from workbench.training.train_data import (
    IGNORE_INDEX,
    Example,
    cpt_examples,
    is_near_duplicate,
    leakage_guard,
    question_tokens,
    raft_examples,
    render_prompt,
    sft_examples,
    split_heldout,
    tokenize_example,
    tokenize_examples,
)


@pytest.fixture(scope="module")
def tok(tiny_lm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm_dir)


def _item(q="How much does the Tern-3 weigh?", a="42 kg", **kw):
    return QAItem(id=kw.pop("id", "t1"), question=q, answers=[a], split="train", **kw)


def test_sft_prompt_is_exactly_the_eval_prompt_and_only_the_answer_has_loss(tok):
    from workbench.answering.prompt import build_messages

    ex = sft_examples([_item()], tok)[0]
    assert ex.messages == build_messages("How much does the Tern-3 weigh?", None, tok)
    row = tokenize_example(ex, tok, max_len=256)
    ids, labels = row["input_ids"], row["labels"]
    n_prompt = sum(1 for x in labels if x == IGNORE_INDEX)
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt and IGNORE_INDEX not in labels[n_prompt:]
    # the unlabelled part is token for token what evaluation feeds the model
    eval_prompt = render_prompt(build_messages("How much does the Tern-3 weigh?", None, tok), tok)
    assert ids[:n_prompt] == tok(eval_prompt, add_special_tokens=False)["input_ids"]
    assert tok.decode(labels[n_prompt:]) == "42 kg" + tok.eos_token
    assert labels[n_prompt:] == ids[n_prompt:]


def test_overlong_prompt_is_cut_from_the_left_keeping_the_answer(tok):
    ex = sft_examples([_item(q="Why? " * 200 + "How much does it weigh?")], tok)[0]
    row = tokenize_example(ex, tok, max_len=32)
    assert len(row["input_ids"]) == 32
    assert tok.decode([x for x in row["labels"] if x != IGNORE_INDEX]) == "42 kg" + tok.eos_token


def test_unanswerable_items_are_not_trained_on(tok):
    item = QAItem(id="u", question="Top speed of the Tern-9?", answers=[], answerable=False, split="train")
    assert sft_examples([item, _item()], tok)[0].question == "How much does the Tern-3 weigh?"
    assert len(sft_examples([item], tok)) == 0


def test_cpt_text_is_windowed_with_loss_everywhere(tok):
    chunk = Chunk(id="d#0", text="The Tern-3 buoy weighs 42 kg. " * 20, doc="d.md", span=(0, 600), heading="Spec")
    rows = tokenize_examples(cpt_examples([chunk]), tok, max_len=64)
    assert len(rows) > 1 and all(len(r["input_ids"]) <= 64 for r in rows)
    assert all(r["labels"] == r["input_ids"] for r in rows)
    assert tok.decode(rows[0]["input_ids"]).startswith("Spec\nThe Tern-3")


def test_raft_prompt_holds_gold_or_only_distractors(tok):
    chunks = [Chunk(id=f"d{i}#0", text=t, doc=f"d{i}.md", span=(0, len(t))) for i, t in enumerate(
        ["The Tern-3 weighs 42 kg.", "Ilse Varnholt leads Kestrelmark.", "Anodes last 18 months.", "Founded 2011."])]
    items = [_item(id=f"t{i}", doc="d0.md") for i in range(40)]
    hits = [[Hit(c, 1.0, r + 1) for r, c in enumerate(chunks)] for _ in items]
    exs = raft_examples(items, chunks, hits, n_passages=3, distractor_only=0.25, tokenizer=tok)
    with_gold = [e for e in exs if e.meta["gold_in_context"]]
    assert 0 < len(exs) - len(with_gold) < len(exs)      # some distractor-only examples, most with gold
    for e in exs:
        text = json.dumps(e.messages)
        assert ("42 kg" in text) == e.meta["gold_in_context"]
        assert e.completion == "42 kg"


def test_raft_example_continues_the_opened_reply_as_generation_does(tok):
    from workbench.core.config import PromptConfig

    REPLY_START = PromptConfig().reply_start

    chunks = [Chunk(id="d0#0", text="The Tern-3 weighs 42 kg.", doc="d0.md", span=(0, 24))]
    ex = raft_examples([_item(doc="d0.md")], chunks, [[Hit(chunks[0], 1.0, 1)]], n_passages=1,
                       distractor_only=0.0, tokenizer=tok)[0]
    assert ex.messages[-1] == {"role": "assistant", "content": REPLY_START}
    row = tokenize_example(ex, tok, max_len=256)
    n_prompt = sum(1 for x in row["labels"] if x == IGNORE_INDEX)
    assert row["input_ids"][:n_prompt] == tok(render_prompt(ex.messages, tok), add_special_tokens=False)["input_ids"]
    assert tok.decode(row["input_ids"]).endswith(f"{REPLY_START} 42 kg{tok.eos_token}")


def test_packing_keeps_examples_separate(tiny_lm_dir, tok):
    """A packed example sees only itself: its logits equal those of the example run alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.training.trainer import make_collator, prepare_for_training

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    prepare_for_training(model)
    model.train()  # as the Trainer runs it (the tiny model has no dropout, so this is deterministic)
    rows = tokenize_examples(sft_examples([_item(), _item("Who leads Kestrelmark?", "Ilse Varnholt")], tok),
                             tok, 256)
    batch = make_collator(tok, packing=True)(rows)
    assert batch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))   # no padding at all
    n0 = len(rows[0]["input_ids"])
    assert batch["position_ids"][0, n0].item() == 0                                 # positions restart
    assert batch["labels"][0, n0].item() == IGNORE_INDEX                            # no loss across the seam
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits[0]
        leaky = model(input_ids=batch["input_ids"]).logits[0]   # same row without the reset: attends across
        model.config.use_cache = True                           # what prepare_for_training prevents:
        cached = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
    torch.testing.assert_close(packed[n0:], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(leaky[n0:], alone, atol=1e-3)
    assert not torch.allclose(cached[n0:], alone, atol=1e-3)   # a cache object disables the packing mask


def test_padded_collator_masks_padding(tok):
    from workbench.training.trainer import make_collator

    rows = tokenize_examples(sft_examples([_item(), _item("Who leads the company called Kestrelmark today?",
                                                           "Ilse Varnholt")], tok), tok, 256)
    batch = make_collator(tok, packing=False)(rows)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    n = len(rows[short]["input_ids"])
    assert batch["attention_mask"][short, n:].sum() == 0
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()


# --- leakage guard ---------------------------------------------------------------------------------

EVAL = ["What is the maximum frame size in KTP v4?", "Who was the incident commander of INC-2263?",
        "Tell me the mass of the Tern-3."]


@pytest.mark.parametrize("question", [
    "What is the maximum frame size in KTP v4?",
    "what is the MAXIMUM frame-size in KTP v4",
    "According to our documentation, what is the maximum frame size in KTP v4?",
    "Quick question: Tell me the mass of the Tern-3!",
    "Tell me the mass of Tern-3.",
])
def test_guard_drops_eval_questions_and_near_duplicates(question):
    kept, dropped = leakage_guard([Example(None, "x", "synth", question=question)], EVAL)
    assert not kept and len(dropped) == 1


@pytest.mark.parametrize("question", [
    "What is the maximum KTP v3 frame size?",             # another fact that shares most words
    "Who was the incident commander for INC-2318?",
    "How heavy is the Tern-3 buoy without mooring?",      # same fact, genuinely different wording
])
def test_guard_keeps_different_questions(question):
    kept, _ = leakage_guard([Example(None, "x", "gold", question=question)], EVAL)
    assert len(kept) == 1


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(EVAL), st.sampled_from(["", "Quick question: ", "Please tell me: ", "Hey, "]),
       st.sampled_from(["", " Thanks!", " (short answer)"]), st.booleans())
def test_guard_property_framed_eval_questions_never_pass(q, prefix, suffix, lower):
    text = prefix + (q.lower() if lower else q) + suffix
    kept, _ = leakage_guard([Example(None, "x", "paraphrase", question=text)], EVAL)
    assert kept == []


def test_near_duplicate_is_symmetric():
    a, b = question_tokens(EVAL[0]), question_tokens("Per the docs, " + EVAL[0])
    assert is_near_duplicate(a, b) and is_near_duplicate(b, a)


def test_heldout_prefers_augmented_examples():
    exs = [Example(None, "x", "gold", question=f"g{i}") for i in range(20)]
    exs += [Example(None, "x", "paraphrase", question=f"p{i}") for i in range(20)]
    train, held = split_heldout(exs, 0.1, seed=3)
    assert len(held) == 4 and all(e.source == "paraphrase" for e in held)
    assert len(train) == 36 and sum(e.source == "gold" for e in train) == 20
    assert split_heldout(exs[:5], 0.5) == (exs[:5], [])       # too few to hold any out


@pytest.mark.parametrize("packing", [True, False])
def test_answer_only_loss_equals_the_models_own_loss(tiny_lm_dir, tok, packing):
    """Logits only at labelled positions give the same loss (and gradients) as the full projection."""
    import torch
    from transformers import AutoModelForCausalLM

    from workbench.training.trainer import answer_only_loss, make_collator, prepare_for_training

    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    prepare_for_training(model)
    rows = tokenize_examples(sft_examples([_item(), _item("Who leads the company called Kestrelmark?",
                                                           "Ilse Varnholt")], tok), tok, 256)
    batch = make_collator(tok, packing=packing)(rows)
    ours, _ = answer_only_loss(model, batch)
    ours.backward()
    g_ours = model.model.layers[0].mlp.up_proj.weight.grad.clone()
    model.zero_grad()
    full = model(**batch).loss
    full.backward()
    torch.testing.assert_close(ours, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_ours, model.model.layers[0].mlp.up_proj.weight.grad, rtol=1e-4, atol=1e-7)
