"""Golden values for ``tests/core/test_spine_parity.py``, computed with uncover at commit 7af87c2 (the last
commit before the "one spine" refactor of the engines into ``uncover/core``, whose first commit is 1897573).

Regenerate (e.g. after a torch / transformers upgrade moves float32 rounding; the values must always come
from 7af87c2 - a deliberate behaviour change drops its quantity here, in a commit that says so):

    git worktree add /tmp/old 7af87c2
    PYTHONPATH=/tmp/old .venv/bin/python tests/core/data/make_spine_parity.py   # writes spine_parity.pt here
    git worktree remove /tmp/old --force

(``tests/core/test_spine_parity.py`` does this by itself, into a temporary folder, on a machine whose
versions or CPU differ from the ones recorded here: another CPU's kernels round differently.)

The script refuses to run against any tree that has ``uncover/core/variants.py`` (i.e. after the refactor):
the point is that the golden values come from the old engines, and the test recomputes them with the new.

This module holds three things that need no particular uncover version:
- ``tiny_model(arch)``: a tiny random causal LM (the config of ``tests/conftest.py::tiny_hf``) whose every
  parameter is then overwritten from a seeded generator, so the weights do not depend on transformers'
  initialisation code, with a word-level tokenizer over the words used here;
- ``tiny_inputs(model)``: the prompts, token ids, metric, facts and in-context task the quantities use;
- ``dynamics_inputs()``: the configs of the seeded toy-transformer / MLP measures and short training runs;
and ``compute_old`` / ``dynamics_old``, the 7af87c2 API calls. The test holds the current API's calls.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ARCHS = ("gpt2", "llama", "gemma3")
GOLDEN = Path(__file__).with_name("spine_parity.pt")

# ---- construction (API-independent) --------------------------------------------------------------
FACT_SPECS = [  # (subject, relation, attribute): "capital" prompts of different lengths (left padding)
    ("France", "capital", " Paris"),
    ("United Kingdom", "capital", " London"),
    ("Japan", "capital", " Tokyo"),
]
TRACE_SPECS = [("Eiffel Tower", "landmark_city", " Paris"), ("United Kingdom", "capital", " London")]
ICL_PAIRS = (("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("light", "dark"),
             ("old", "new"), ("early", "late"), ("wet", "dry"))


def _texts() -> list[str]:
    from uncover.data.facts import Fact

    out = []
    for subject, relation, attribute in FACT_SPECS + TRACE_SPECS:
        f = Fact(subject, relation, attribute)
        out += [f.prompt(), attribute, "x"]
    out += ["Q A :"] + [w for pair in ICL_PAIRS for w in pair]
    return out


def word_tokenizer():
    """Words and punctuation of every prompt used here (sorted, so ids are stable); [UNK] otherwise."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in _texts() for w in re.findall(r"\w+|[^\w\s]", text)})
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def tiny_hf(arch: str):
    """The tests/conftest.py tiny config of ``arch`` (vocab 1000, d_model 64, 3 layers, 4 heads, 2 KV heads),
    every parameter then drawn from a generator seeded with 0 in name order: matrices N(0, 1/fan_in),
    norm weights 1 + N(0, 0.1^2) (Gemma's zero-centred norms: N(0, 0.1^2)), other vectors N(0, 0.1^2)."""
    import transformers as T

    torch.manual_seed(0)
    common = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if arch == "gpt2":
        hf = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=1000, n_embd=64, n_layer=3, n_head=4, n_positions=256))
    elif arch == "llama":
        hf = T.LlamaForCausalLM(T.LlamaConfig(**common))
    elif arch == "gemma3":
        hf = T.Gemma3ForCausalLM(T.Gemma3TextConfig(**common, head_dim=16, sliding_window=8))
    else:
        raise ValueError(arch)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in sorted(hf.named_parameters()):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.ndim >= 2:
                p.copy_(noise / p.shape[-1] ** 0.5)
            elif "norm" in name or re.search(r"\bln_", name):
                p.copy_(noise * 0.1 + (0.0 if arch.startswith("gemma") or not name.endswith("weight") else 1.0))
            else:
                p.copy_(noise * 0.1)
    return hf.eval()


def tiny_model(arch: str):
    import uncover as uc

    return uc.load(tiny_hf(arch), tokenizer=word_tokenizer())


def tiny_inputs(model) -> dict:
    """Everything the quantities read, for a tiny model: 4 prompts of 10 random tokens (the corrupted ones
    differ at 3 positions), a left-padding mask, a logit-difference metric, facts and an ICL task."""
    from uncover.data.facts import Fact
    from uncover.data.icl import IclTask

    g = torch.Generator().manual_seed(1)
    n, pos = 4, 10
    clean = torch.randint(2, 1000, (n, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, [2, 5, 7]] = torch.randint(2, 1000, (n, 3), generator=g)
    mask = torch.ones(n, pos, dtype=torch.long)
    mask[1, :2] = 0  # prompt 1 left-padded by two
    answers, wrong = torch.randint(2, 1000, (n,), generator=g), torch.randint(2, 1000, (n,), generator=g)

    def metric(logits):  # mean logit difference at the last position (works with logits_to_keep=1)
        rows = torch.arange(n)
        return (logits[rows, -1, answers] - logits[rows, -1, wrong]).mean()

    rep = torch.randint(2, 1000, (2, 5), generator=g)
    return dict(
        clean=clean, corrupt=corrupt, mask=mask, metric=metric, batch_size=8,  # 2 variants per forward
        receivers_q=[(2, 1)], receivers_kv=[(2, 0), (2, 3)], only_layers=(1, 2), only_heads=(0, 3),
        repeated=torch.cat([torch.full((2, 1), 1), rep, rep], 1), half_len=5,
        facts=[Fact(*s) for s in FACT_SPECS], knockout_window=2,
        trace_facts=[Fact(*s) for s in TRACE_SPECS], trace_kwargs=dict(window=2, n_samples=3, noise_std=0.5,
                                                                          batch_size=16),
        icl=IclTask("tiny_antonyms", ICL_PAIRS), fv_kwargs=dict(n_prompts=4, n_shots=2, top_k=3, layer=1, seed=0),
    )


def dynamics_inputs() -> dict:
    from uncover.dynamics.grokking import GrokConfig
    from uncover.dynamics.induction import InductionConfig
    from uncover.dynamics.memorization import MemorizationConfig

    return dict(
        induction=InductionConfig(d_vocab=16, seq_len=12, d_model=32, n_heads=4, n_layers=2, steps=20,
                                  batch_size=16, eval_every=10, seed=0),
        grok=GrokConfig(p=13, train_frac=0.4, d_model=32, n_heads=4, d_mlp=32, steps=40, eval_every=10,
                        measure_every=20, warmup_steps=5, seed=0, device="cpu"),
        memo=MemorizationConfig(p=23, width=64, steps=40, eval_every=20, seed=0),
        prune=(0.0, 0.25, 0.5),
        key_freqs=[1, 2, 3],
    )


def rows_to_tensors(prefix: str, rows: list[dict]) -> dict[str, torch.Tensor]:
    """A list of metric rows -> one float64 tensor per numeric key (lists become extra axes); wall-clock
    timings ("seconds") are left out."""
    out = {}
    for key in sorted(k for k in rows[0] if "seconds" not in k):
        values = [r[key] for r in rows]
        if all(isinstance(v, (int, float, list)) and not isinstance(v, bool) for v in values):
            out[f"{prefix}.{key}"] = torch.tensor(values, dtype=torch.float64)
    return out


def _f(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().cpu().clone()


# ---- the 7af87c2 API -----------------------------------------------------------------------------
def compute_old(model, I: dict) -> dict[str, torch.Tensor]:
    """Every engine output at 7af87c2 (axes as the current, layer-first convention; see the comments)."""
    from uncover.applications.editing.tracing import average_traces, trace
    from uncover.components import patching as P
    from uncover.components.heads import attention_scores
    from uncover.components.recall import attention_knockout
    from uncover.representations import function_vectors as FV

    c, x, mask, metric, bs = I["clean"], I["corrupt"], I["mask"], I["metric"], I["batch_size"]
    L, H = model.cfg.n_layers, model.cfg.n_heads
    out: dict[str, torch.Tensor] = {}

    def put(key, r):
        out[key] = _f(r.values)
        out[key + ".clean_metric"] = _f(r.clean_metric)
        out[key + ".corrupt_metric"] = _f(r.corrupt_metric)

    # activation patching (sites were strings at 7af87c2)
    put("act.z_head", P.activation_patching(model, c, x, metric, "z", "head", attention_mask=mask, batch_size=bs,
                                            logits_to_keep=1))
    put("act.resid_pos", P.activation_patching(model, c, x, metric, "resid_pre", "pos", batch_size=bs))
    put("act.attn_layer_noise", P.activation_patching(model, c, x, metric, "attn_out", "layer", direction="noise",
                                                      normalize=False, attention_mask=mask, batch_size=bs))
    put("act.v_head", P.activation_patching(model, c, x, metric, "v", "head", batch_size=bs, logits_to_keep=1))
    # Site("z", layers, heads) restriction now == ``only`` of those (layer, head) pairs then
    only = [(l, h) for l in I["only_layers"] for h in I["only_heads"]]
    put("act.z_head_site", P.activation_patching(model, c, x, metric, "z", "head", batch_size=bs, only=only,
                                                 logits_to_keep=1))
    # positions=[0, -1] with by="pos" now == ``only`` of (layer, 0) and (layer, pos - 1) then
    n_pos = c.shape[1]
    only = [(l, p) for l in range(L) for p in (0, n_pos - 1)]
    put("act.mlp_pos_positions", P.activation_patching(model, c, x, metric, "mlp_out", "pos", batch_size=bs,
                                                       only=only, attention_mask=mask))
    # attribution patching
    put("attr.z_head", P.attribution_patching(model, c, x, metric, "z", "head", attention_mask=mask, logits_to_keep=1))
    put("attr.resid_pos", P.attribution_patching(model, c, x, metric, "resid_pre", "pos"))
    put("attr.mlp_layer", P.attribution_patching(model, c, x, metric, "mlp_out", "layer", direction="noise"))
    # path patching
    put("path.logits", P.path_patching(model, c, x, metric, "logits", attention_mask=mask, batch_size=bs))
    put("path.q", P.path_patching(model, c, x, metric, I["receivers_q"], "q", batch_size=bs))
    put("path.kv", P.path_patching(model, c, x, metric, I["receivers_kv"], ["k", "v"], attention_mask=mask,
                                   batch_size=bs))
    # ablation sweeps
    put("ablate.z_mean", P.ablation_sweep(model, c, metric, "z", "head", "mean", batch_size=bs, logits_to_keep=1))
    put("ablate.resid_resample", P.ablation_sweep(model, c, metric, "resid_pre", "pos", "resample", batch_size=bs))
    put("ablate.mlp_zero", P.ablation_sweep(model, c, metric, "mlp_out", "layer", "zero", attention_mask=mask,
                                            batch_size=bs))
    # head scores (previous-token / duplicate / induction)
    for k, v in attention_scores(model, I["repeated"], half_len=I["half_len"]).items():
        out[f"heads.{k}"] = _f(v)
    # attention knockout (values [n_targets, n_windows], per_fact [n_targets, n_windows, n]: same axes now)
    ko = attention_knockout(model, I["facts"], n=len(I["facts"]), window=I["knockout_window"], batch_size=bs)
    out["knockout.values"], out["knockout.per_fact"], out["knockout.base_prob"] = (
        _f(ko.values), _f(ko.per_fact), _f(ko.base_prob))
    # causal tracing: scores were [n_tokens, n_layers] at 7af87c2, transposed here to the layer-first
    # [n_layers, n_tokens] of today; AverageTrace.effects were [n_categories, n_layers], likewise transposed
    traces = []
    for i, f in enumerate(I["trace_facts"]):
        t = trace(model, f.prompt(), f.subject, f.attribute, **I["trace_kwargs"])
        traces.append(t)
        for kind, s in t.scores.items():
            out[f"trace{i}.{kind}"] = _f(s).T.contiguous()
        out[f"trace{i}.clean_prob"], out[f"trace{i}.corrupt_prob"] = _f(t.clean_prob), _f(t.corrupt_prob)
    avg = average_traces(traces)
    for kind, e in avg.effects.items():
        out[f"trace_avg.{kind}"] = _f(e).T.contiguous()
    # function vectors (mean head activations [L, H, d_head], effects [L, H], vector [d_model])
    icl, kw = I["icl"], I["fv_kwargs"]
    clean_p = icl.prompts(kw["n_prompts"], kw["n_shots"], seed=kw["seed"])
    corrupted_p = icl.prompts(kw["n_prompts"], kw["n_shots"], shuffle_labels=True, seed=kw["seed"] + 1)
    mean_z = FV.mean_head_activations(model, clean_p)
    out["fv.mean_z"] = _f(mean_z)
    out["fv.effects_exact"] = _f(FV.indirect_effects(model, corrupted_p, mean_z, "exact"))
    out["fv.effects_exact_layers"] = _f(FV.indirect_effects(model, corrupted_p, mean_z, "exact", layers=[0, 2]))
    out["fv.effects_attribution"] = _f(FV.indirect_effects(model, corrupted_p, mean_z, "attribution"))
    for method in ("exact", "attribution"):
        fv = FV.function_vector(model, icl, method=method, **kw)
        out[f"fv.vector_{method}"] = _f(fv.vector)
        out[f"fv.heads_{method}"] = torch.tensor(fv.heads)
    assert L and H
    return out


def dynamics_old(D: dict) -> dict[str, torch.Tensor]:
    """The dynamics measures at 7af87c2 on seeded toy models (they read the toy modules' hooks directly then)."""
    from uncover.dynamics.data import modular_data, repeated_sequences
    from uncover.dynamics.grokking import logit_grid, neuron_grid, progress_measures, run_grokking
    from uncover.dynamics.induction import head_scores, per_position_loss, run_induction
    from uncover.dynamics.memorization import run_memorization
    from uncover.dynamics.models import ToyTransformer

    ic, gc = D["induction"], D["grok"]
    out = {}
    toy = ToyTransformer(ic.model_config(), seed=0).eval()
    tokens = repeated_sequences(8, ic.seq_len, ic.d_vocab, seed=0)
    prev, ind = head_scores(toy, tokens)
    out["dyn.prev_token"], out["dyn.induction"] = _f(prev), _f(ind)
    out["dyn.per_position_loss"] = _f(per_position_loss(toy, tokens))
    grok = ToyTransformer(gc.model_config(), seed=0).eval()
    data = modular_data(gc.p, gc.op, gc.train_frac, seed=0)
    out["dyn.logit_grid"], out["dyn.neuron_grid"] = _f(logit_grid(grok, gc.p)), _f(neuron_grid(grok, gc.p))
    out.update({f"dyn.measures.{k}": _f(v) for k, v in progress_measures(grok, data, D["key_freqs"]).items()})
    r = run_induction(ic)
    out.update(rows_to_tensors("run_induction.curves", r.curves))
    out["run_induction.prev"], out["run_induction.induction"] = (_f(r.final_prev_token_scores),
                                                                _f(r.final_induction_scores))
    g = run_grokking(gc)
    out.update(rows_to_tensors("run_grokking.curves", g.curves))
    out.update(rows_to_tensors("run_grokking.measures", g.measures))
    out["run_grokking.key_freqs"] = _f(g.key_freqs)
    out["run_grokking.embed_freq_norms"] = _f(g.embed_freq_norms)
    m = run_memorization(D["memo"], prune_fractions=D["prune"])
    out.update(rows_to_tensors("run_memorization.curves", m.curves))
    out.update(rows_to_tensors("run_memorization.pruning", m.pruning))
    out["run_memorization.neuron_ipr"] = _f(m.neuron_ipr)
    return out


def machine() -> str:
    """The versions and CPU whose float32 kernels the values depend on (CPUs with the same capability but
    another vendor or model run other kernels)."""
    import platform

    import transformers

    info = Path("/proc/cpuinfo")
    names = re.findall(r"^model name\s*:\s*(.+)$", info.read_text(), re.M) if info.exists() else []
    cpu = names[0].strip() if names else platform.processor()
    return (f"torch {torch.__version__}, transformers {transformers.__version__}, "
            f"CPU {torch.backends.cpu.get_cpu_capability()} ({cpu})")


def main(out: Path = GOLDEN) -> None:
    import uncover

    root = Path(uncover.__file__).resolve().parent
    if (root / "core" / "variants.py").exists():
        sys.exit(f"{root} is after the spine refactor; run with PYTHONPATH=<a 7af87c2 worktree> (see the docstring)")
    torch.set_num_threads(1)
    golden = {}
    for arch in ARCHS:
        model = tiny_model(arch)
        golden.update({f"{arch}/{k}": v for k, v in compute_old(model, tiny_inputs(model)).items()})
    golden.update({f"toy/{k}": v for k, v in dynamics_old(dynamics_inputs()).items()})
    golden = {k: v.contiguous() for k, v in sorted(golden.items())}
    torch.save({"commit": "7af87c2", "versions": machine(), "values": golden}, out)
    print(f"{len(golden)} tensors, {out.stat().st_size / 1024:.0f} KiB -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)
