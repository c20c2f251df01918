"""The memory budget (uncover.core.budget): chunk sizes follow it, results do not change, bad budgets fail
clearly, and the report states each section's peak against it."""
from __future__ import annotations

import sys

import pytest
import torch

import uncover.core.vocab as V
from uncover.core import budget as B
from uncover.core.memory import release_memory
from uncover.core.variants import rows_per_forward
from uncover.errors import UncoverError


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model("llama")


def test_budget_is_set_and_restored():
    import uncover as uc

    assert uc.set_memory_budget is B.set_memory_budget and uc.memory_budget is B.memory_budget
    assert B.budget_bytes() is None
    with B.memory_budget(2.5):
        assert B.budget_bytes() == 2_500_000_000
        with B.memory_budget(None):
            assert B.budget_bytes() is None
        assert B.budget_bytes() == 2_500_000_000
    assert B.budget_bytes() is None
    for bad in (0, -1, float("nan")):
        with pytest.raises(UncoverError, match="positive number of GB"):
            B.set_memory_budget(bad)


def test_weights_bytes_is_the_parameters_and_buffers(model):
    by_hand = sum(p.numel() * p.element_size() for p in model.hf.parameters())
    by_hand += sum(b.numel() * b.element_size() for b in model.hf.buffers())
    assert B.weights_bytes(model) == by_hand


def test_a_budget_below_the_weights_says_so(model):
    with B.memory_budget(B.weights_bytes(model) / 2e9):
        with pytest.raises(UncoverError, match="weights alone take .*--max-memory"):
            B.working_bytes(model)


def test_vocabulary_chunks_shrink_under_a_budget_and_give_the_same_values(model):
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 9), generator=torch.Generator().manual_seed(0))
    assert V.vocab_rows(model) == V.VOCAB_BUDGET // model.cfg.d_vocab
    room_for_3_rows = (B.weights_bytes(model) + B.CHUNK_SHARE * 4 * 3 * model.cfg.d_vocab) / 1e9
    normed = model(tokens, return_normed=True)
    with B.memory_budget(room_for_3_rows):
        assert V.vocab_rows(model) == 3
        assert [len(range(*s.indices(model.cfg.d_vocab))) for s in V.vocab_slices(model, 3)][0] == model.cfg.d_vocab
        nll = V.next_token_nll(model, normed, tokens)
    full = -model(tokens)[:, :-1].float().log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(nll, full, rtol=1e-6, atol=1e-6)


def test_rows_per_forward_follow_the_budget(model):
    c = model.cfg
    per_row = 4 * (10 * (6 * c.d_model + 3 * c.d_mlp + 2 * c.n_heads * 10) + 10 * c.d_vocab)  # float32, 10 positions
    assert rows_per_forward(model, 10, 64, None) == 64
    with B.memory_budget((B.weights_bytes(model) + B.FORWARD_SHARE * 5 * per_row) / 1e9):
        assert rows_per_forward(model, 10, 64, None) == 5
        assert rows_per_forward(model, 10, 64, 2 * per_row) == 2  # an explicit max_bytes wins


def test_release_memory_and_peak_rss():
    release_memory()
    big = torch.ones(2**25)  # 128 MiB
    assert B.peak_rss_bytes() >= big.numel() * 4
    del big
    release_memory()


def test_the_report_states_each_sections_peak_against_the_budget(tmp_path, monkeypatch):
    from tests.conftest import tiny_hf
    from tests.core.test_report_summary import Marked
    from tests.editing.conftest import word_tokenizer
    from uncover.report import build

    tiny_hf("llama").save_pretrained(tmp_path / "tiny")
    word_tokenizer().save_pretrained(tmp_path / "tiny")
    module = type(sys)("budget_sections")
    module.ONE = Marked("one", "One", ["Found: 1."], 1)
    monkeypatch.setitem(sys.modules, "budget_sections", module)
    monkeypatch.setattr(build, "SECTIONS", ["budget_sections:ONE"])
    peak = B.peak_rss_bytes() / 1e9
    page = build.build_report(str(tmp_path / "tiny"), tmp_path / "a", max_memory=1000 * peak).path.read_text()
    assert "within the memory budget (peak memory ≤" in page
    # a budget above the weights but below this process's peak: the same section is over it
    page = build.build_report(str(tmp_path / "tiny"), tmp_path / "b", max_memory=peak / 2).path.read_text()
    assert "over the memory budget" in page and "within the memory budget" not in page
    without = build.build_report(str(tmp_path / "tiny"), tmp_path / "c").path.read_text()
    assert "peak memory of the run so far" in without and "memory budget" not in without
    assert B.budget_bytes() is None
    with pytest.raises(UncoverError, match="weights alone"):
        build.build_report(str(tmp_path / "tiny"), tmp_path / "d", max_memory=1e-9)
