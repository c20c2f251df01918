"""A tiny random Llama whose word-level tokenizer knows the words of the report's prompts (IOI names, fact
prompts, truth statements, sentiment words), so every report section can compute on it in seconds."""
from __future__ import annotations

import re
from collections import Counter

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

import uncover as uc
from tests.conftest import tiny_hf


def report_words() -> list[str]:
    from uncover.data.facts import FACTS
    from uncover.data.ioi import NAMES, OBJECTS, PLACES, TEMPLATES

    first = [w.strip() for w in NAMES] + list(PLACES) + list(OBJECTS)
    texts = list(TEMPLATES) + [t for f in FACTS for t in f.prompts() + [f.attribute]]
    counts = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t))
    return list(dict.fromkeys(first + [w for w, _ in counts.most_common()]))


def report_tokenizer(vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    words = ["[UNK]", "[PAD]"] + report_words()[: vocab_size - 2]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def report_lm(seed: int = 0) -> uc.Model:
    """Tiny random Llama (3 layers, 4 heads, d_model 64) with the report's words as single tokens."""
    return uc.load(tiny_hf("llama", seed), tokenizer=report_tokenizer())
