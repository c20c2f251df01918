"""CLI: ``uncover toy superposition``, ``uncover sae train|eval|dashboard``, ``uncover neurons``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from uncover.cli import load_model as _load
from uncover.core.progress import RichProgress

console = Console()
toy_app = typer.Typer(no_args_is_help=True, help="Toy models (superposition).")
sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders and transcoders: train, evaluate, browse.")


@toy_app.command("superposition")
def superposition_command(
    out: Path = typer.Option(Path("superposition"), help="folder for the HTML figures and JSON"),
    full: bool = typer.Option(False, help="paper-size runs (n=200, m=20 dimensionality; slow)"),
    seed: int = typer.Option(0),
) -> None:
    """Train the toy-model sweeps and write their figures (pentagon, WᵀW, phase diagram, dimensionality)."""
    from uncover.features import plots, superposition as sp

    out.mkdir(parents=True, exist_ok=True)
    with console.status("training toy models ..."):
        data = sp.toy_experiments(full=full, seed=seed)
    (out / "superposition.json").write_text(json.dumps(data))
    sw, ph, dim = data["sweep"], data["phase"], data["dimensionality"]
    figures = {
        "five_in_two": plots.feature_directions(data["five_in_two"]["W"], ["dense", "sparse"]),
        "gram": plots.gram_heatmaps(sw["relu"]["gram"], sw["relu"]["norms"], [f"1-S={p:g}" for p in sw["probabilities"]]),
        "phase": plots.phase_diagram(ph["densities"], ph["importances"], ph["phase"], sp.PHASES),
        "dimensionality": plots.dimensionality_scatter(dim["dims_per_feature"], dim["D"]),
    }
    for name, fig in figures.items():
        fig.write_html(out / f"{name}.html", include_plotlyjs="directory")
    table = Table("1 - S", "ReLU: represented", "ReLU: interference", "linear: represented")
    for i, p in enumerate(sw["probabilities"]):
        table.add_row(f"{p:g}", str(sw["relu"]["represented"][i]), f"{sw['relu']['interference'][i]:.3f}",
                      str(sw["linear"]["represented"][i]))
    console.print(table)
    console.print(f"pentagon dimensionalities: {[round(d, 3) for d in data['five_in_two']['D'][1]]}")
    console.print(f"figures and JSON written to {out}/")


@sae_app.command("train")
def train_command(
    model: str = typer.Argument("smollm2-135m"),
    hook: Optional[str] = typer.Option(None, help="input hook name (default: middle layer hook_resid_post)"),
    hook_out: Optional[str] = typer.Option(None, help="output hook name: trains a transcoder"),
    architecture: str = typer.Option("topk", help="relu | topk | batchtopk | jumprelu"),
    expansion: int = typer.Option(8, help="latents per input dimension"),
    k: int = typer.Option(32, help="active latents (topk, batchtopk)"),
    l1: float = typer.Option(5.0, help="L1 coefficient (relu)"),
    l0: float = typer.Option(1.0, help="L0 coefficient (jumprelu)"),
    tokens: int = typer.Option(200_000, help="training tokens"),
    seq_len: int = typer.Option(128),
    batch_size: int = typer.Option(4096),
    lr: Optional[float] = typer.Option(None, help="default: 2e-4 scaled by 1/sqrt(width/16k)"),
    corpus: Optional[str] = typer.Option(None, help="HF dataset name or .txt/.jsonl path (default: offline corpus)"),
    out: Path = typer.Option(Path("sae"), help="output folder (SAELens format) and checkpoints"),
    seed: int = typer.Option(0),
) -> None:
    """Harvest activations from a corpus and train an SAE (or transcoder); resumable from --out."""
    from uncover.data.corpus import corpus_tokens
    from uncover.features.sae import SAE, SAEConfig
    from uncover.features.store import ShuffleBuffer, harvest
    from uncover.features.training import SAETrainConfig, lr_for_width, train_sae

    m = _load(model)
    hook = hook or f"blocks.{m.cfg.n_layers // 2}.hook_resid_post"
    names = m.hook_names()
    for h in filter(None, [hook, hook_out]):
        if h not in names:
            raise typer.BadParameter(f"unknown hook {h!r}; see model.hook_names(), e.g. blocks.0.hook_resid_post")
    n_seqs = -(-tokens // seq_len)
    toks = corpus_tokens(m, n_seqs, seq_len, seed=seed, source=corpus)
    probe = harvest(m, [hook] + ([hook_out] if hook_out else []), toks[:1])
    d_in, d_out = probe[hook].shape[-1], probe[hook_out].shape[-1] if hook_out else None
    cfg = SAEConfig(d_in, expansion * d_in, architecture, k=k, l1_coefficient=l1, l0_coefficient=l0, d_out=d_out,
                    hook_name=hook, hook_name_out=hook_out, model_name=m.name)
    sae = SAE(cfg, seed=seed)
    stream = ShuffleBuffer(m, [hook] + ([hook_out] if hook_out else []), toks, batch_size=batch_size,
                           buffer_tokens=max(16 * batch_size, 65_536), seed=seed)
    batches = (b[hook] if not hook_out else (b[hook], b[hook_out]) for b in stream)
    tcfg = SAETrainConfig(total_tokens=tokens, batch_size=batch_size, lr=lr or lr_for_width(cfg.d_sae),
                          checkpoint_dir=str(out / "checkpoint"), checkpoint_every=50, seed=seed,
                          dead_after_tokens=min(1_000_000, tokens // 4))
    with RichProgress() as progress:
        history = train_sae(sae, batches, tcfg, progress=progress)
    sae.save(out)
    console.print(f"explained variance {history.explained_variance[-1]:.3f}, L0 {history.l0[-1]:.1f}, "
                  f"dead {100 * history.dead_fraction[-1]:.1f}%; saved to {out}/ (SAELens format)")


@sae_app.command("eval")
def eval_command(
    path: Path = typer.Argument(..., help="SAE folder (uncover or SAELens format)"),
    model: str = typer.Option("smollm2-135m"),
    n_seqs: int = typer.Option(32),
    seq_len: int = typer.Option(128),
    seed: int = typer.Option(1, help="corpus sample seed (use one other than training's)"),
    out: Optional[Path] = typer.Option(None, help="write metrics JSON here"),
) -> None:
    """L0, explained variance, CE loss recovered, KL, dead/dense fractions of a saved SAE."""
    from uncover.data.corpus import corpus_tokens
    from uncover.features.evals import evaluate_sae
    from uncover.features.sae import SAE

    sae = SAE.load(path)
    m = _load(model)
    with console.status("evaluating ..."):
        result = evaluate_sae(m, sae, corpus_tokens(m, n_seqs, seq_len, seed=seed))
    metrics = {k: v for k, v in result.to_dict().items() if k != "feature_density"}
    table = Table("metric", "value")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(table)
    if out:
        out.write_text(json.dumps(metrics, indent=1))


@sae_app.command("dashboard")
def dashboard_command(
    path: Path = typer.Argument(..., help="SAE folder"),
    model: str = typer.Option("smollm2-135m"),
    latents: Optional[str] = typer.Option(None, help="comma-separated latent ids (default: 12 most frequent, <5%)"),
    n_seqs: int = typer.Option(256),
    seq_len: int = typer.Option(128),
    out: Path = typer.Option(Path("dashboard.html")),
) -> None:
    """An HTML dashboard: top contexts, histograms, logit effects and polysemanticity per latent."""
    from uncover.data.corpus import corpus_tokens
    from uncover.features.dashboard import feature_dashboard
    from uncover.features.sae import SAE

    sae = SAE.load(path)
    m = _load(model)
    chosen = [int(x) for x in latents.split(",")] if latents else None
    with RichProgress() as progress:
        page = feature_dashboard(m, sae, corpus_tokens(m, n_seqs, seq_len, seed=2), chosen, progress=progress)
    out.write_text(page)
    console.print(f"dashboard written to {out}")


def neurons_command(
    model: str = typer.Argument("smollm2-135m"),
    layer: int = typer.Option(..., help="MLP layer"),
    neurons: Optional[str] = typer.Option(None, help="comma-separated neuron ids (default: 5 most active)"),
    n_seqs: int = typer.Option(128),
    seq_len: int = typer.Option(64),
    out: Optional[Path] = typer.Option(None, help="write an HTML page of neuron cards here"),
) -> None:
    """Top contexts, vocabulary projection of value vectors and polysemanticity of MLP neurons."""
    from uncover.components.neurons import analyse_neurons, most_active_neurons
    from uncover.data.corpus import corpus_tokens

    m = _load(model)
    if not 0 <= layer < m.cfg.n_layers:
        raise typer.BadParameter(f"layer must be in 0..{m.cfg.n_layers - 1}")
    toks = corpus_tokens(m, n_seqs, seq_len, seed=0)
    ids = [int(x) for x in neurons.split(",")] if neurons else most_active_neurons(m, layer, toks)
    with RichProgress() as progress:
        report = analyse_neurons(m, layer, ids, toks, n_top=min(5, n_seqs), progress=progress)
    data = report.to_dict(m)
    table = Table("neuron", "max act", "polysemanticity", "top context (peak token in [])", "promotes")
    for card in data["cards"]:
        words, acts = card["contexts"][0]
        peak = max(range(len(acts)), key=acts.__getitem__)
        text = "".join(f"[{w}]" if i == peak else w for i, w in enumerate(words)).replace("\n", " ")
        table.add_row(card["title"], f"{card['max_activation']:.2f}", f"{card['polysemanticity']:.2f}",
                      text[-60:], " ".join(repr(t) for t in card["top_tokens"][:5]))
    console.print(table)
    if out:
        from uncover.features.dashboard import cards_page

        out.write_text(cards_page(f"{m.name} layer {layer} neurons", data["cards"]))
        console.print(f"neuron cards written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(toy_app, name="toy")
    app.add_typer(sae_app, name="sae")
    app.command("neurons")(neurons_command)
