"""A tiny random Llama with a word-level tokenizer over the alignment data's words."""
from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
from transformers import PreTrainedTokenizerFast

import uncover as uc
from tests.conftest import tiny_hf


def words_tokenizer(texts, vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """Every word and punctuation mark of ``texts`` (first seen first), [UNK] for the rest."""
    words = ["[UNK]", "[PAD]"]
    for text in texts:
        for w in re.findall(r"\w+|[^\w\s]", text):
            if w not in words and len(words) < vocab_size:
                words.append(w)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="session")
def align_lm() -> uc.Model:
    """Tiny random Llama that reads the bias, toxicity and truth prompts word by word."""
    from uncover.data import bias

    texts = list(bias.bias_prompts().prompts) + [" he she"]
    try:
        from uncover.data import wordlists

        texts += [w for lst in wordlists.LISTS.values() for w in lst] + list(wordlists.NEUTRAL_PROMPTS)
        texts += list(wordlists.PROVOKING_PROMPTS)
    except ImportError:
        pass
    return uc.load(tiny_hf("llama"), tokenizer=words_tokenizer(texts))
