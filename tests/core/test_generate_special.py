"""``Model.generate`` never emits tokens the tokenizer marks as special (Gemma 3's multimodal
``<start_of_image>`` and friends), unless the caller allows them; end-of-sequence still ends a generation."""
from __future__ import annotations

MULTIMODAL = {"<start_of_image>", "<end_of_image>", "[multimodal]"}  # Gemma 3's, plain added tokens in its GGUF


def _special_and_eos(model) -> tuple[set[int], set[int]]:
    """Independent of Model.special_token_ids: added tokens flagged special, the named specials and, for
    Gemma 3, its multimodal tokens by name."""
    t = model.tokenizer
    special = {i for i, tok in t.added_tokens_decoder.items() if tok.special or tok.content in MULTIMODAL}
    special |= set(t.all_special_ids)
    eos = model.hf.generation_config.eos_token_id
    return special, {t.eos_token_id, *(eos if isinstance(eos, list) else [eos])}


def _generated_ids(model, monkeypatch, towards: int, **kwargs) -> list[int]:
    """Greedy new token ids while the final residual is pushed towards token ``towards`` (so the model
    would emit it at every step), as ``hf.generate`` returned them."""
    seen = []
    generate = model.hf.generate

    def recording(*args, **kw):
        out = generate(*args, **kw)
        seen.append(out[0, kw["input_ids"].shape[1]:].tolist())
        return out

    direction = model.W_U[:, towards] / model.W_U[:, towards].norm()
    push = ("ln_final.hook_normalized", lambda x, hook: x + 200.0 * direction)
    monkeypatch.setattr(model.hf, "generate", recording)
    model.generate("The Eiffel Tower is located in the city of", max_new_tokens=8, fwd_hooks=[push], **kwargs)
    return seen[0]


def test_gemma_never_generates_special_tokens(gemma, monkeypatch):
    special, eos = _special_and_eos(gemma)
    for name in MULTIMODAL:
        assert gemma.tokenizer.convert_tokens_to_ids(name) in gemma.special_token_ids(), name
    assert gemma.tokenizer.convert_tokens_to_ids("<table>") not in gemma.special_token_ids()  # HTML is text
    assert not eos & set(gemma.special_token_ids())
    image = gemma.tokenizer.convert_tokens_to_ids("<start_of_image>")
    allowed = _generated_ids(gemma, monkeypatch, image, allow_special=True)
    assert allowed.count(image) == len(allowed)              # the push works: unfiltered, it is all images
    monkeypatch.undo()
    filtered = _generated_ids(gemma, monkeypatch, image)
    assert filtered and not set(filtered) & (special - eos), gemma.tokenizer.convert_ids_to_tokens(filtered)


def test_allow_special_lets_them_through(gemma, monkeypatch):
    calls = []
    generate = gemma.hf.generate
    monkeypatch.setattr(gemma.hf, "generate", lambda *a, **kw: calls.append(kw) or generate(*a, **kw))
    gemma.generate("Hello", max_new_tokens=2)
    gemma.generate("Hello", max_new_tokens=2, allow_special=True)
    assert set(calls[0]["suppress_tokens"]) == _special_and_eos(gemma)[0] - _special_and_eos(gemma)[1]
    assert "suppress_tokens" not in calls[1]


def test_smollm_end_of_turn_still_ends(smollm):
    special, eos = _special_and_eos(smollm)
    assert 2 in eos and 2 not in smollm.special_token_ids() and 0 in smollm.special_token_ids()
    assert smollm.generate("The capital of France is", max_new_tokens=30).strip().startswith("Paris")
