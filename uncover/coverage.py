"""Which causal-LM architectures of the installed transformers uncover supports, and at what level, measured.

For every model type of ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``: build a tiny random model from its config
(2 layers, d_model 64, 4 heads, vocab 1000, few experts), load it, and check what the level promises.

Levels: ``full`` (every standard name of DESIGN.md: residual, attention with q/k/v/z/pattern, MLP with
pre/post, or a MoE router), ``partial`` (the residual decomposition and the names listed as missing),
``residual`` (hook_embed, resid_pre/post, ln_final only), ``refused`` (a clear error), and, not counted,
``skipped`` (encoder-decoder, encoder-only and multimodal wrappers, or configs that cannot be built small).
Used by tests/core/test_coverage.py and scripts/coverage.py (which writes docs/coverage.md).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import torch

SHRINK = {
    "num_hidden_layers": 2, "n_layer": 2, "n_layers": 2, "num_layers": 2,
    "hidden_size": 64, "n_embd": 64, "d_model": 64,
    "intermediate_size": 96, "n_inner": 96, "ffn_dim": 96, "ffn_hidden_size": 96,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "num_heads": 4, "attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000,
    "max_position_embeddings": 256, "n_positions": 256, "n_ctx": 256,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16,
    "rotary_dim": 8, "num_dense_layers": 1, "moe_k": 2, "num_experts_per_token": 2, "num_expert_group": 1,
}
NULLABLE = ("head_dim", "num_key_value_heads", "num_experts_per_tok")  # set even where the default is None
_PREFIXES = ("swa_", "global_", "local_", "sliding_")
MAX_PARAMS = 5_000_000
SEQ2SEQ_EXTRA = {"trocr", "bert-generation", "blt"}  # decoders of encoder-decoder / latent-patch models
ENCODER_EXTRA = {"xlnet"}


def kind_of(model_type: str) -> str:
    """"decoder", "encoder-decoder", "encoder-only" or "multimodal" (from transformers' auto mappings)."""
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto as M

    if model_type in M.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES or model_type in SEQ2SEQ_EXTRA \
            or model_type in M.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:
        return "encoder-decoder"
    if model_type in M.MODEL_FOR_MASKED_LM_MAPPING_NAMES or model_type in ENCODER_EXTRA:
        return "encoder-only"
    if model_type in M.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or model_type in M.MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES:
        return "multimodal"
    try:
        subs = getattr(AutoConfig.for_model(model_type), "sub_configs", {}) or {}
    except Exception:
        subs = {}
    if any(k.endswith(("text_config", "vision_config", "audio_config", "decoder", "audio_encoder_config")) for k in subs):
        return "multimodal"
    return "decoder"


def tiny_config(model_type: str):
    """The model type's default config with every size shrunk (see SHRINK), or an exception saying why not."""
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    d = base.to_dict()
    n_layers = next((d[k] for k in ("num_hidden_layers", "n_layer", "n_layers", "num_layers") if isinstance(d.get(k), int)), None)
    kw = {k: v for k, v in SHRINK.items() if k in d and (d[k] is not None or k in NULLABLE)}
    for k, v in d.items():  # per-layer-type sizes (inkling's swa_num_attention_heads): shrunk in proportion
        base = next((b for b in SHRINK if k.startswith(_PREFIXES) and k.split("_", 1)[1] == b), None)
        if base is not None and isinstance(v, int) and isinstance(d.get(base), int) and d[base] > 0:
            kw[k] = max(1, round(SHRINK[base] * v / d[base]))
    if "qk_rope_head_dim" in d:  # multi-head latent attention: rotary runs on the rope part only
        kw["head_dim"] = SHRINK["qk_rope_head_dim"]
        kw["num_key_value_heads"] = SHRINK["num_attention_heads"]  # keys are decompressed per head
    for k, v in d.items():
        if k.endswith("token_id") and isinstance(v, int) and v >= 1000:
            kw[k] = 1
        elif k.endswith("token_id") and isinstance(v, list):
            kw[k] = [min(i, 999) for i in v]
        elif isinstance(v, list) and n_layers and len(v) == n_layers and k not in ("architectures",):
            kw[k] = _two_kinds(v)
    return AutoConfig.for_model(model_type, **kw)


def _two_kinds(v: list) -> list:
    """The first two entries of a per-layer list, keeping a second kind of layer if there is one."""
    other = next((x for x in v if x != v[0]), v[-1])
    return [v[0], other]


def build(model_type: str, seed: int = 0):
    """A tiny random causal LM of ``model_type`` (eval mode), or an exception saying why not."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(model_type)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    if n > MAX_PARAMS:
        raise ValueError(f"its config does not shrink (still {n / 1e6:.0f}M parameters)")
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init leaves norms at exactly 1 / 0: perturb so every site matters
        for p in hf.parameters():
            if p.is_floating_point():
                p.add_(torch.randn_like(p) * 0.02)
    return hf.eval()


@dataclass
class Row:
    model_type: str
    kind: str
    level: str  # full / partial / residual / refused / skipped
    reason: str = ""
    missing: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # checks that did not hold
    seconds: float = 0.0
    attention: bool = False  # every layer holds an attention module (a transformer, not SSM / hybrid)


STANDARD = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z", "attn.hook_pattern", "mlp.hook_pre",
            "mlp.hook_post")


def expected_shape(model, name: str, batch: int, pos: int) -> tuple | None:
    """The documented shape of a hook (None: not fixed by the name alone)."""
    c = model.cfg
    if name.endswith(("hook_q", "hook_z")):
        return (batch, pos, c.n_heads, None)
    if name.endswith(("hook_k", "hook_v")):
        per_layer = getattr(model.adapter, "kv_heads", None)  # the block's own KV heads where they vary
        return (batch, pos, per_layer(int(name.split(".")[1])) if per_layer else c.n_kv_heads, None)
    if name.endswith("hook_pattern"):
        return (batch, c.n_heads, pos, pos)
    if name.endswith(("hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_result")):
        return (batch, pos, c.n_heads, c.d_model)
    if name.endswith(("mlp.hook_pre", "mlp.hook_post")):
        return (batch, pos, c.d_mlp)
    if name.endswith("hook_router"):
        return None
    if name == "hook_pos_embed":
        return None
    return (batch, pos, c.d_model)


def _shape_ok(shape: tuple, want: tuple | None) -> bool:
    return want is None or (len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want)))


def check(model_type: str, deep: bool = True) -> Row:
    """Build, load and check one model type. deep=False: load + parity only (the fast path)."""
    from uncover.core.model import Model
    from uncover.errors import UncoverError

    start = time.perf_counter()
    kind = kind_of(model_type)
    row = Row(model_type, kind, "skipped")
    if kind != "decoder":
        row.reason = f"{kind} (uncover names decoder-only causal LMs)"
        return row
    try:
        hf = build(model_type)
    except Exception as e:
        row.reason = f"no tiny model: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        return row
    row.attention = _all_attention(hf)
    try:
        model = Model(hf)
    except UncoverError as e:
        row.level, row.reason = "refused", str(e)[:200]
        return row
    adapter = model.adapter
    row.missing = list(getattr(adapter, "missing", []))
    reason = getattr(adapter, "reason", "")
    row.level = "residual" if reason else ("partial" if row.missing else "full")
    row.reason = reason
    _checks(model, row, deep)
    row.seconds = time.perf_counter() - start
    return row


def _checks(model, row: Row, deep: bool) -> None:
    tokens = torch.randint(3, 900, (2, 8), generator=torch.Generator().manual_seed(0))
    failed = row.failed
    with torch.no_grad():
        ref = model.hf(input_ids=tokens, use_cache=False).logits
        logits, cache = model.run_with_cache(tokens)
        if not torch.equal(logits, ref):
            failed.append("parity")
        if not deep:
            return
        every: dict = {}
        try:
            _, every = model.run_with_cache(tokens, names=lambda n: True)
            for name in model.hook_names():
                if name not in every or not _shape_ok(tuple(every[name].shape), expected_shape(model, name, 2, 8)):
                    failed.append(f"shape {name}")
        except Exception as e:
            failed.append(f"caching every name: {type(e).__name__}: {e}"[:160])
        for name in model.hook_names():
            if name.endswith("hook_router"):
                continue
            try:
                out = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda t, h: t * 0.5 + 0.1)])
                if torch.allclose(out, ref):
                    failed.append(f"write {name}")
            except Exception as e:
                failed.append(f"write {name}: {type(e).__name__}: {e}"[:160])
    failed += _decomposition(model, every)
    failed += _techniques(model, tokens)


def _decomposition(model, cache) -> list[str]:
    """resid_pre + attn_out + mlp_out == resid_post (and pre + attn == mid) in every block that has them."""
    failed = []
    for l in range(model.cfg.n_layers):
        names = [f"blocks.{l}.hook_{n}" for n in ("resid_pre", "attn_out", "mlp_out", "resid_post")]
        if all(n in cache for n in names):
            pre, attn, mlp, post = (cache[n].float() for n in names)
            if not torch.allclose(pre + attn + mlp, post, rtol=1e-4, atol=1e-4):
                failed.append(f"decomposition block {l}")
            mid = f"blocks.{l}.hook_resid_mid"
            if mid in cache and not torch.allclose(pre + attn, cache[mid].float(), rtol=1e-4, atol=1e-4):
                failed.append(f"resid_mid block {l}")
    return failed


def _techniques(model, tokens: torch.Tensor) -> list[str]:
    """Head scores and activation patching run (where the model has the names they need)."""
    from uncover.components.heads import attention_scores
    from uncover.components.patching import activation_patching

    failed = []
    names = model.hook_names()
    if "blocks.0.attn.hook_pattern" in names:
        try:
            scores = attention_scores(model, tokens=torch.cat([tokens[:, :4], tokens[:, :4]], 1), half_len=4)
            if scores["induction"].shape != (model.cfg.n_layers, model.cfg.n_heads):
                failed.append("head scores shape")
        except Exception as e:
            failed.append(f"head scores: {type(e).__name__}: {e}"[:160])
    clean, corrupt = tokens[:1], tokens[1:]
    metric = lambda logits: logits[:, -1, 5].mean()  # noqa: E731
    sites = ["resid_pre"] + (["z"] if "blocks.0.attn.hook_z" in names else [])
    for site in sites:
        try:
            res = activation_patching(model, clean, corrupt, metric, site=site, by="head" if site == "z" else "layer",
                                      normalize=False)
            if not torch.isfinite(res.values).all():
                failed.append(f"patching {site}: not finite")
        except Exception as e:
            failed.append(f"patching {site}: {type(e).__name__}: {e}"[:160])
    return failed


def _all_attention(hf) -> bool:
    """Whether every layer of the stack has a child module that is attention (by its class or name)."""
    from uncover.core.adapters.structural import _ATTN, _NORM, find_layers
    from uncover.errors import UncoverError

    try:
        _, layers = find_layers(hf, None)
    except UncoverError:
        return False
    def transformer(layer) -> bool:  # an attention module, and no recurrent mixer beside it (Falcon-H1's mamba)
        kids = list(layer.named_children())
        return any(_ATTN.search(type(m).__name__) and not _NORM.search(type(m).__name__)
                   and not _RECURRENT.search(type(m).__name__) for _, m in kids) and \
            not any(_MIXER.search(type(m).__name__) or _MIXER.search(n) for n, m in kids)

    return all(transformer(layer) for layer in layers)


_RECURRENT = re.compile(r"rwkv|mamba|linear|delta|lightning|retention|recurrent|ssm", re.I)
_MIXER = re.compile(r"rwkv|mamba|delta|lightning|retention|recurrent|linear_?att", re.I)  # a recurrent mixer


def share_full(rows: list[Row]) -> tuple[int, int]:
    """(full, total) over decoder-only transformer types that could be built (not SSMs or hybrids)."""
    transformers_ = [r for r in rows if r.kind == "decoder" and r.level != "skipped" and r.attention]
    return sum(r.level == "full" and not r.failed for r in transformers_), len(transformers_)


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
