"""Report section "Features": toy models of superposition, and a small TopK SAE on a middle layer of the
model with its evaluation and a few feature cards (plus cards for the layer's most active MLP neurons).

Default run: small toys and an SAE of 4 x d_model latents trained on ~50k corpus tokens (about two
minutes for smollm2 on 2 CPU cores). ``ctx.full``: the paper-size toys (n=200, m=20 dimensionality)
and a 16 x d_model SAE on ~400k tokens.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from uncover.features import plots
from uncover.features import superposition as sp
from uncover.report import claims as C
from uncover.report import html
from uncover.report.section import ReportContext

if TYPE_CHECKING:
    from uncover.core.model import Model


# cut-offs of the findings' wording (uncover.report.claims); each is printed with its claim
PENTAGON = C.Threshold("pentagon", 0.05, "largest |dimensionality - 2/5|")  # five features at 2/5 each
REPRESENTED = 0.5  # a feature is represented when ||W_i|| > 0.5 (computed in superposition.toy_experiments)
SWEEP_M = 5  # hidden dimensions of the n=20 sweep: more represented features than this is superposition
SAE_LOSS = C.Threshold("sae_loss", 1e-3, "loss change", "nats")


def _fraction_near(D: list[float]) -> float:
    fracs = [1, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8, 1 / 3]
    if not D:
        return float("nan")
    return sum(min(abs(d - f) for f in fracs) < 0.05 for d in D) / len(D)


SAE_CORPUS = "shakespeare"  # natural language, so feature cards show concepts (uncover.data.corpus)
SKIP = 1  # window position 0 is an attention sink (~100x the median norm): not trained on, left clean in the splice
POOL, CARDS, N_TOP, SHOWN = 48, 6, 10, 5  # card candidates, cards, contexts per polysemanticity, contexts shown
# SAE run sizes: sequences of 128 tokens for training / evaluation, latents per d_model, epochs
SAE_SIZES = {"default": dict(n_train=256, n_eval=16, width=4, epochs=4),
             "full": dict(n_train=2400, n_eval=64, width=16, epochs=2)}  # fits the built-in corpus (tested)


def _sae(model: "Model", ctx: ReportContext) -> dict[str, Any]:
    from uncover.components.neurons import vocab_projection
    from uncover.data.corpus import corpus_tokens
    from uncover.features.analysis import (
        activation_histogram, context_window, logit_effects, peak_tokens, polysemanticity, top_contexts_from_batches,
    )
    from uncover.features.evals import evaluate_sae
    from uncover.features.sae import SAE, SAEConfig
    from uncover.features.store import iter_harvest
    from uncover.features.training import SAETrainConfig, train_sae

    layer = model.cfg.n_layers // 2
    hook, neuron_hook = f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.mlp.hook_post"
    size = SAE_SIZES["full" if ctx.full else "default"]
    n_train, n_eval, seq_len, width, epochs = size["n_train"], size["n_eval"], 128, size["width"], size["epochs"]
    tokens = corpus_tokens(model, n_train + n_eval, seq_len, seed=ctx.seed, source=SAE_CORPUS)
    train_tokens, eval_tokens = tokens[:n_train], tokens[n_train:]
    chunks, neuron_maxima = [], []
    for acts in iter_harvest(model, [neuron_hook, hook], train_tokens, model_batch_size=16, progress=ctx.progress):
        chunks.append(acts[hook])
        neuron_maxima.append(acts[neuron_hook].view(-1, seq_len, model.cfg.d_mlp).amax(1))
    full = torch.cat(chunks).view(n_train, seq_len, -1)                            # [n_train, seq_len, d]
    acts = full[:, SKIP:].reshape(-1, full.shape[-1])                              # training rows
    cfg = SAEConfig(model.cfg.d_model, width * model.cfg.d_model, "topk", k=32, hook_name=hook,
                    model_name=model.name)
    sae = SAE(cfg, seed=ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    batches = (acts[torch.randperm(len(acts), generator=gen)] for _ in range(epochs))
    tcfg = SAETrainConfig(total_tokens=epochs * len(acts), batch_size=1024, lr=1e-3, warmup_steps=20, log_every=5,
                          dead_after_tokens=len(acts) // 2, seed=ctx.seed)
    history = train_sae(sae, batches, tcfg, progress=ctx.progress)
    sae.save(ctx.work_dir / "sae")
    result = evaluate_sae(model, sae, eval_tokens, skip_positions=SKIP)
    metrics = {k: v for k, v in result.to_dict().items() if k != "feature_density"}

    # feature cards: of the POOL most frequent latents firing on 0.2%-5% of tokens, the CARDS most
    # monosemantic (lowest polysemanticity over their top N_TOP contexts)
    with torch.no_grad():
        dens = torch.zeros(cfg.d_sae)
        for chunk in acts.split(8192):
            dens += (sae.encode(chunk) > 0).sum(0)
        dens /= len(acts)
        candidates = ((dens > 0.002) & (dens < 0.05)).nonzero().flatten()
        pool = candidates[dens[candidates].argsort(descending=True)][:POOL].tolist() if len(candidates) else []
        pool = pool or dens.topk(POOL).indices.tolist()
        pool_acts = torch.cat([sae.encode(c)[:, pool] for c in full.flatten(0, 1).split(8192)])
        pool_acts = pool_acts.view(n_train, seq_len, -1)
        pool_acts[:, :SKIP] = 0  # positions the SAE was not trained on
        pool_poly = polysemanticity(top_contexts_from_batches(pool_acts.split(32), train_tokens, n_top=N_TOP))
        order = sorted(range(len(pool)), key=lambda i: (pool_poly[i].nan_to_num(float("inf")).item(), -dens[pool[i]]))
        chosen = [pool[i] for i in order[:CARDS]]
        latent_acts = pool_acts[..., order[:CARDS]]
    top = top_contexts_from_batches(latent_acts.split(32), train_tokens, n_top=N_TOP)
    poly = polysemanticity(top)
    effects = logit_effects(model, sae.W_dec[chosen].detach(), k=8)
    cards = []
    for u, latent in enumerate(chosen):
        cards.append({"title": f"latent {latent}", "density": float(dens[latent]),
                      "max_activation": float(top.values[u, 0]), "polysemanticity": float(poly[u]),
                      "peaks": peak_tokens(model, top, u),
                      "contexts": [context_window(model, top, u, r) for r in range(SHOWN)],
                      "histogram": activation_histogram(latent_acts[..., u]),
                      "top_tokens": effects["top_tokens"][u], "bottom_tokens": effects["bottom_tokens"][u]})

    # neurons of the same layer: the three with the largest activation
    maxima = torch.cat(neuron_maxima)                                                # [n_train, d_mlp]
    neurons = maxima.amax(0).topk(3).indices.tolist()
    from uncover.components.neurons import top_neuron_contexts

    sub = train_tokens[maxima[:, neurons].amax(1).topk(min(24, n_train)).indices.sort().values]
    ntop = top_neuron_contexts(model, layer, neurons, sub, n_top=3, batch_size=8)
    vocab = vocab_projection(model, layer, neurons, k=8)
    npoly = polysemanticity(ntop)
    neuron_cards = [{"title": f"L{layer} neuron {n}", "max_activation": float(ntop.values[u, 0]),
                     "polysemanticity": float(npoly[u]),
                     "contexts": [context_window(model, ntop, u, r) for r in range(ntop.values.shape[1])],
                     "top_tokens": vocab["top_tokens"][u], "bottom_tokens": vocab["bottom_tokens"][u]}
                    for u, n in enumerate(neurons)]
    return {"layer": layer, "hook": hook, "corpus": SAE_CORPUS, "d_sae": cfg.d_sae, "k": cfg.k,
            "train_tokens": epochs * len(acts),
            "unique_tokens": len(acts), "metrics": metrics,
            "history": {k: getattr(history, k) for k in ("tokens", "explained_variance", "l0", "dead_fraction")},
            "cards": cards, "neuron_cards": neuron_cards}


class FeaturesSection:
    key = "features"
    title = "Features: superposition and sparse autoencoders"
    version = "2"

    def compute(self, model: "Model", ctx: ReportContext) -> dict[str, Any]:
        return {"toys": sp.toy_experiments(ctx.full, ctx.seed), "sae": _sae(model, ctx)}

    def render(self, data: dict[str, Any]) -> str:
        toys, sae = data["toys"], data["sae"]
        parts = [html.paragraph(
            "Toy models of superposition (Elhage et al. 2022) compress n sparse features into m < n "
            "dimensions; a sparse autoencoder (SAE) tries to undo that on the real model's activations.")]
        five = toys["five_in_two"]
        parts.append(plots_html(plots.feature_directions(five["W"], ["dense features", "sparse features (p=0.03)"]),
                                "Five features in two dimensions: columns of W."))
        sw = toys["sweep"]
        relu = sw["relu"]
        titles = [f"1-S={p:g}" for p in sw["probabilities"]]
        parts.append(plots_html(plots.gram_heatmaps(relu["gram"], relu["norms"], titles),
                                "n=20, m=5, importance 0.7^i: WᵀW (top) and feature norms ||W_i|| (bottom)."))
        ph = toys["phase"]
        parts.append(plots_html(plots.phase_diagram(ph["densities"], ph["importances"], ph["phase"], sp.PHASES),
                                "n=2, m=1 phase diagram (best of several seeds per cell)."))
        dim = toys["dimensionality"]
        parts.append(plots_html(plots.dimensionality_scatter(dim["dims_per_feature"], dim["D"]),
                                f"Feature dimensionality, n={dim['n']}, m={dim['m']}."))
        near = [_fraction_near(d) for d in dim["D"]]
        ph_counts = [sum(row.count(i) for row in ph["phase"]) for i in range(3)]
        m = sae["metrics"]
        spliced = C.direction(m["ce_loss_with_sae"] - m["ce_loss_clean"], SAE_LOSS, "raises", "lowers",
                              "does not clearly change")
        found = [
            f"A TopK SAE ({sae['d_sae']} latents, k={sae['k']}) on {sae['hook']} after {sae['train_tokens']:,} "
            f"training tokens: explained variance {m['explained_variance']:.3f}, L0 {m['l0']:.1f}, "
            f"dead latents {100 * m['dead_fraction']:.1f}%, dense latents {100 * m['dense_fraction']:.1f}%; trained on "
            f"{sae.get('corpus', 'the corpus')} text without window position 0 (an attention sink), which keeps its "
            f"clean activation when the SAE is spliced in. The cards below are the {CARDS} most monosemantic of the "
            f"{POOL} most frequent latents firing on 0.2-5% of tokens (lowest polysemanticity: exp(entropy) of the "
            f"tokens their top {N_TOP} contexts peak on, weighted by activation).",
            f"Spliced into the model the SAE {spliced.word} next-token loss: {m['ce_loss_clean']:.3f} -> "
            f"{m['ce_loss_with_sae']:.3f} nats ({spliced.test}; zero ablation: {m['ce_loss_zero_ablation']:.3f}), "
            f"recovering {100 * m['ce_loss_recovered']:.1f}% of the loss; KL {m['kl_div']:.3f} nats.",
        ]
        found += [_five_finding(five), _sweep_finding(sw),
            f"Phase diagram: {ph_counts[2]} of {sum(ph_counts)} cells superpose, {ph_counts[1]} give feature 2 the "
            f"dimension, {ph_counts[0]} drop it.",
            f"Dimensionality: {100 * sum(x for x in near if x == x) / max(sum(1 for x in near if x == x), 1):.0f}% "
            f"of represented features lie within 0.05 of 1, 3/4, 2/3, 1/2, 2/5, 3/8 or 1/3.",
        ]
        parts.append(html.findings(found, headline=2))
        parts.append(plots_html(plots.training_curves(sae["history"]), "SAE training."))
        parts.append(html.table([[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in m.items()],
                                header=["metric", "value"]))
        parts.append("<h3>Feature cards</h3>" + "".join(card_html(c) for c in sae["cards"]))
        parts.append("<h3>MLP neurons of the same layer</h3>" + "".join(card_html(c) for c in sae["neuron_cards"]))
        return "\n".join(parts)


def _five_finding(five: dict[str, Any]) -> str:
    """Dense features' dedicated dimensions; "pentagon" only when all five sparse dimensionalities are ~2/5."""
    dense, sparse = five["D"]
    off = max(abs(d - 0.4) for d in sparse) if len(sparse) == 5 else float("inf")
    shape = C.at_most(off, PENTAGON, "share them as a pentagon", "do not form a pentagon")
    return (f"n=5, m=2: dense features keep {sum(1 for d in dense if d > 0.5)} dedicated dimensions "
            f"(dimensionalities {', '.join(f'{d:.2f}' for d in dense[:2])}); sparse features {shape.word}: "
            f"dimensionalities {min(sparse):.3f}-{max(sparse):.3f} ({shape.test}).")


def _sweep_finding(sw: dict[str, Any]) -> str:
    """Superposition = more represented features (norm > REPRESENTED) than the SWEEP_M hidden dimensions."""
    relu, lin = sw["relu"]["represented"], sw["linear"]["represented"]
    relu_sp = "superposes when sparse" if relu[-1] > SWEEP_M else "does not superpose even when sparse"
    lin_sp = "never superposes" if max(lin) <= SWEEP_M else f"superposes ({max(lin)} features in {SWEEP_M} dimensions)"
    return (f"n=20, m={SWEEP_M}: the ReLU model represents {relu[0]} features when dense and {relu[-1]} at density "
            f"{sw['probabilities'][-1]:g}, so it {relu_sp}; the linear model represents {lin[0]} and {lin[-1]}: it "
            f"{lin_sp} (superposition: more features with norm > {REPRESENTED} than the {SWEEP_M} dimensions).")


def plots_html(fig, caption: str) -> str:
    return html.plotly_figure(fig, caption)


def card_html(card: dict[str, Any]) -> str:
    """One feature or neuron card: stats, top contexts with highlighted tokens, logit effects, histogram."""
    stats = [f"max activation {card['max_activation']:.3g}", f"polysemanticity {card['polysemanticity']:.2f}"]
    if "density" in card:
        stats.insert(0, f"fires on {100 * card['density']:.2f}% of tokens")
    shares = "" if not card.get("peaks") else (
        "its top contexts peak on " + ", ".join(f"{t!r} ({100 * w:.0f}%)" for t, w in card["peaks"])
        + " of their activation mass; it promotes " + ", ".join(repr(t) for t in card["top_tokens"][:3]) + ".")
    stats += [shares] if shares else []
    vmax = max([max(a) for _, a in card["contexts"] if a] + [1e-9])
    contexts = "".join(f"<div>{html.tokens_html(t, a, vmax=vmax)}</div>" for t, a in card["contexts"])
    logits = html.table([[", ".join(repr(t) for t in card["top_tokens"])],
                         [", ".join(repr(t) for t in card["bottom_tokens"])]], header=["promotes / suppresses"])
    hist = plots_html(plots.histogram(card["histogram"]), "non-zero activations") if card.get("histogram") else ""
    return (f'<div class="card"><h4>{html.escape(card["title"])}</h4><p>{html.escape("; ".join(stats))}</p>'
            f"{contexts}{logits}{hist}</div>")


SECTION = FeaturesSection()
