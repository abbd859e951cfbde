"""The app's Inside page through AppTest, on a tiny project (tiny LM, tiny embedder, index, LoRA adapter)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def inside_project(tmp_path_factory, tiny_lm_dir, tiny_embedder_dir) -> Path:
    from app_project import build_tiny_project

    base = tmp_path_factory.mktemp("inside-app")
    return build_tiny_project(base / "project", tiny_lm_dir, tiny_embedder_dir)


@pytest.fixture
def inside(inside_project, tiny_lm_dir, monkeypatch):
    """A function opening the Inside page on one view."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WORKBENCH_HOME", str(inside_project))
    monkeypatch.setenv("WORKBENCH_BASE_MODEL", str(tiny_lm_dir))

    def open_view(view: str):
        at = AppTest.from_file(APP, default_timeout=120)
        at.session_state["page"] = "Inside"
        at.session_state["inside_view"] = view
        at.run()
        assert not at.exception, at.exception
        return at

    return open_view


def shown(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "error", "warning", "subheader", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def elements(at, kind: str) -> list:
    """Every element of a proto type (e.g. "imgs", "vega_lite_chart") in the main area."""
    out, stack = [], [at.main]
    while stack:
        node = stack.pop()
        if getattr(node, "type", None) == kind:
            out.append(node)
        stack.extend(getattr(node, "children", {}).values())
    return out


def test_tokens_view_shows_both_tokenizers(inside, tiny_lm_dir):
    from transformers import AutoTokenizer

    at = inside("Tokens")
    assert at.radio(key="page").options[-1] == "Inside"
    text = "The Tern-3 buoy weighs 42 kg."
    at.text_area(key="inside_tokens_text").set_value(text).run()
    assert not at.exception, at.exception
    n_base = len(AutoTokenizer.from_pretrained(tiny_lm_dir)(text, add_special_tokens=False)["input_ids"])
    assert [m.value for m in at.metric] == [str(n_base), str(len(at.dataframe[1].value))]
    assert at.dataframe[0].value["id"].tolist() == AutoTokenizer.from_pretrained(tiny_lm_dir)(
        text, add_special_tokens=False)["input_ids"]
    assert ":blue-background[" in shown(at) and "Tern" in shown(at)
    at.text_area(key="inside_tokens_text").set_value("   ").run()
    assert "the text is empty" in "\n".join(e.value for e in at.error)


def test_next_token_view_reshapes_the_distribution(inside):
    at = inside("Next token")
    assert at.radio(key="inside_next_prompt_kind").value == "RAG prompt"
    # the first eval question of the index's corpus
    assert at.text_input(key="inside_next_question").value == "What does the Tern-3 weigh?"
    table = at.dataframe[0].value
    assert len(table) == 10 and (table["p (settings)"] - table["p (T=1)"]).abs().max() < 1e-9
    assert list(table["logit"]) == sorted(table["logit"], reverse=True)
    at.slider(key="inside_temperature").set_value(0.0).run()
    greedy = at.dataframe[0].value["p (settings)"].tolist()
    assert greedy[0] == pytest.approx(1.0) and sum(greedy[1:]) == 0
    at.slider(key="inside_temperature").set_value(1.0).run()
    at.slider(key="inside_top_k").set_value(3).run()
    cut = at.dataframe[0].value["p (settings)"]
    assert cut[:3].sum() == pytest.approx(1.0) and cut[3:].sum() == 0
    at.button(key="inside_sample").click().run()
    assert not at.exception, at.exception
    assert sum(1 for m in at.markdown if m.value[:3] in {"1. ", "2. ", "3. "}) == 3
    at.text_input(key="inside_next_question").set_value(" ").run()
    assert "Type a question" in shown(at)


def test_attention_view_draws_a_heatmap_and_passage_shares(inside):
    at = inside("Attention")
    assert not at.error, [e.value for e in at.error]
    assert len(elements(at, "image")) == 1  # the matplotlib heatmap
    assert any("eager" in i.value for i in at.info)  # the tiny model loads with SDPA
    shares = at.dataframe[0].value
    assert {"passage 1", "question", "template"} <= set(shares["part"])
    assert shares["layer 1"].sum() == pytest.approx(1.0, abs=1e-4)
    assert shares["mean of layers"].sum() == pytest.approx(1.0, abs=1e-4)
    assert ":orange-background[" in shown(at)  # the passage words it reads most
    at.selectbox(key="inside_head").set_value("2").run()
    at.slider(key="inside_layer").set_value(0).run()
    assert not at.exception and len(elements(at, "image")) == 1
    assert "layer 0" in at.dataframe[0].value.columns


def test_finetune_view_compares_the_adapter_with_the_base_model(inside):
    at = inside("What fine-tuning changed")
    assert not at.error, [e.value for e in at.error]
    tokens = at.dataframe[0].value
    assert tokens["gold token"].iloc[-1] == "<|im_end|>"
    assert np.allclose(tokens["log-ratio"], np.log(tokens["p fine-tuned"]) - np.log(tokens["p base"]), atol=1e-6)
    assert (tokens["log-ratio"].abs() > 1e-4).any()
    at.button(key="inside_ft_batch").click().run()
    assert not at.exception, at.exception
    kinds = at.dataframe[3].value
    assert list(kinds["kind"]) == ["(no kind)", "all"] and list(kinds["n"]) == [1, 1]
    assert len(elements(at, "vega_lite_chart")) == 2  # before vs after, and the distributions by kind


def test_space_view_projects_the_index_and_compares_sentences(inside):
    at = inside("Semantic space")
    assert not at.error, [e.value for e in at.error]
    charts = elements(at, "vega_lite_chart")
    assert len(charts) == 2  # the projection and the similarity matrix
    neighbours = at.dataframe[0].value
    assert list(neighbours["rank"]) == [1, 2, 3, 4, 5][:len(neighbours)] and len(neighbours) >= 3
    assert list(neighbours["cosine"]) == sorted(neighbours["cosine"], reverse=True)
    assert "PCA" in shown(at)
    at.text_area(key="inside_sim_text").set_value("one sentence only").run()
    assert "1 sentences given" in "\n".join(e.value for e in at.error)


def test_views_without_artifacts_say_what_to_build(tmp_path, tiny_lm_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "empty"
    root.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    monkeypatch.setenv("WORKBENCH_BASE_MODEL", str(tiny_lm_dir))
    for view, hint in (("What fine-tuning changed", "Fine-tune an adapter first"),
                       ("Semantic space", "Build an index first")):
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["page"] = "Inside"
        at.session_state["inside_view"] = view
        at.run()
        assert not at.exception and hint in shown(at)


def test_a_prompt_longer_than_the_window_is_cut_with_a_warning(inside):
    at = inside("Next token")
    at.radio(key="inside_next_prompt_kind").set_value("Closed book").run()  # retrieval refuses > 2,000 characters
    long_question = "How heavy is " + "zq xv " * 600 + "?"  # rare letters: > 1,024 tiny-tokenizer tokens
    at.text_input(key="inside_next_question").set_value(long_question).run()
    assert not at.exception, at.exception
    warnings = [w.value for w in at.warning]
    assert any("tokens were cut" in w and "(the model window)" in w for w in warnings), warnings
    assert len(at.dataframe[0].value) == 10  # the view still answers, on the prompt's last 1,024 tokens
