"""The `quick` preset on corpora/demo: the fine-tuned SmolLM2 answers paraphrases of trained facts far
better than the base model (real embedded model; minutes on a 2-core CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "corpora" / "demo"

pytestmark = pytest.mark.slow


def _f1(model, tok, items, cfg) -> float:
    from workbench.answering.answer import answer_questions
    from workbench.answering.generate import Generator
    from workbench.evaluation.metrics import token_f1

    answers = answer_questions([q.question for q in items], Generator(model, tok, cfg.generate))
    return sum(token_f1(a.text, q.answers) for a, q in zip(answers, items)) / len(items)


@pytest.mark.skipif(not (DEMO / "qa.jsonl").exists(), reason="corpora/demo/qa.jsonl not written yet")
def test_quick_preset_learns_the_demo_facts(tmp_path, monkeypatch):
    from workbench.answering.models import load_base_model
    from workbench.core.config import load_preset
    from workbench.corpus.qa import load_qa
    from workbench.training.adapters import load_finetuned
    from workbench.training.finetune import finetune

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    cfg = load_preset("quick")
    res = finetune(DEMO, cfg.finetune, cfg.model, progress=False, run_cfg=cfg)
    assert res.data_source == "gold" and res.heldout_loss is not None
    items = [q for q in load_qa(DEMO / "qa.jsonl") if q.split == "eval" and q.kind == "paraphrase"]
    ft_f1 = _f1(*load_finetuned(res.name, cfg.model)[:2], items, cfg)
    base_f1 = _f1(*load_base_model(cfg.model), items, cfg)
    print(f"\nparaphrases of trained facts (n={len(items)}): base F1 {base_f1:.3f}, fine-tuned F1 {ft_f1:.3f}; "
          f"training {res.seconds:.0f}s, {res.tokens_seen:,} tokens, held-out loss {res.heldout_loss:.3f}")
    assert base_f1 < 0.15
    # measured 0.445 and 0.436 over two seeds (base 0.02); the target is 0.4, the guard leaves room for
    # platform-level numeric drift
    assert ft_f1 >= 0.35 and ft_f1 - base_f1 >= 0.3
