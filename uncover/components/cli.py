"""`uncover lens`, `uncover heads`, `uncover patch`: the components area on the command line."""
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
HEAD_KINDS = ("previous_token", "duplicate_token", "induction", "copying")


def _write_figure(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.html"
    fig.write_html(str(path), include_plotlyjs=True)
    return path


def lens_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    prompt: str = typer.Option("The Eiffel Tower is located in the city of", help="text to read"),
    target: Optional[str] = typer.Option(None, help="a single-token target to track, e.g. ' Paris'"),
    tuned: Optional[Path] = typer.Option(None, help="a saved tuned lens folder to use instead of the logit lens"),
    train_tuned: int = typer.Option(0, help="train a tuned lens for this many steps on the offline corpus first (a few seconds per step on CPU)"),
    out: Path = typer.Option(Path("uncover-out/lens"), help="folder for the plot and JSON"),
) -> None:
    """Logit lens (or tuned lens) at every layer: the top token at the last position, and a target's rank."""
    import torch

    from uncover.components import lens as L
    from uncover.components import plots

    m = _load(model)
    target_id = m.to_single_token(target) if target else None
    tuned_lens = L.TunedLens.load(tuned) if tuned else None
    if train_tuned > 0:
        from uncover.data.corpus import corpus_tokens

        data = corpus_tokens(m, 64, 64)
        tuned_lens = L.train_tuned_lens(m, data[:48], steps=train_tuned, lens=tuned_lens, batch_size=4,
                                        positions_per_seq=16, progress=RichProgress())
        tuned_lens.save(out / "tuned_lens")
        kl = L.lens_kl(m, data[48:52], tuned_lens)
        table = Table("layer", "KL logit lens (nats)", "KL tuned lens (nats)")
        for l in range(m.cfg.n_layers):
            table.add_row(str(l), f"{kl['logit'][l]:.3f}", f"{kl['tuned'][l]:.3f}")
        console.print(table)
        console.print(f"tuned lens saved to {out / 'tuned_lens'}")
    tokens = m.to_tokens(prompt)
    with torch.no_grad():
        result = L.tuned_lens(m, tuned_lens, tokens, target_id) if tuned_lens else L.logit_lens(m, tokens, target_id)
    table = Table("layer", "top token", "p", *(["target p", "target rank"] if target else []))
    rows = []
    for i, label in enumerate(result.labels):
        top_id, p = int(result.top_ids[i, 0, -1, 0]), float(result.top_probs[i, 0, -1, 0])
        row = [label, repr(m.tokenizer.decode([top_id])), f"{p:.3f}"]
        if target:
            row += [f"{float(result.target_prob[i, 0, -1]):.4f}", str(int(result.target_rank[i, 0, -1]))]
        table.add_row(*row)
        rows.append(row)
    console.print(table)
    str_tokens = m.to_str_tokens(tokens[0])
    top_tokens = [[m.tokenizer.decode([int(t)]) for t in result.top_ids[i, 0, :, 0]] for i in range(len(result.labels))]
    fig = plots.lens_heatmap(top_tokens, result.top_probs[:, 0, :, 0].tolist(), result.labels, str_tokens,
                             f"{result.kind} lens: {prompt!r}")
    path = _write_figure(fig, out, f"{result.kind}_lens")
    (out / f"{result.kind}_lens.json").write_text(json.dumps({"prompt": prompt, "rows": rows}))
    console.print(f"plot written to {path}")


def heads_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    kind: str = typer.Option("all", help="previous_token, duplicate_token, induction, copying, or all"),
    top: int = typer.Option(10, help="how many top heads to list"),
    out: Path = typer.Option(Path("uncover-out/heads"), help="folder for heatmaps and scores"),
) -> None:
    """Attention-head scores (layer x head) with the top heads named."""
    from safetensors.torch import save_file

    from uncover.components import heads as Hd
    from uncover.components import plots

    kinds = list(HEAD_KINDS) if kind == "all" else [kind]
    if any(k not in HEAD_KINDS for k in kinds):
        raise typer.BadParameter(f"--kind must be one of {', '.join(HEAD_KINDS)} or all, not {kind!r}")
    m = _load(model)
    scores = {}
    with console.status("scoring heads ..."):
        if any(k != "copying" for k in kinds):
            scores.update(Hd.attention_scores(m))
        if "copying" in kinds:
            scores["copying"] = Hd.copying_scores(m)
    out.mkdir(parents=True, exist_ok=True)
    for k in kinds:
        best = Hd.top_heads(scores[k], top)
        table = Table("head", "score", title=k)
        for l, h, v in best:
            table.add_row(f"L{l}H{h}", f"{v:.3f}")
        console.print(table)
        _write_figure(plots.head_heatmap(scores[k].tolist(), f"{k} score: {m.name}", "score", best[:5]), out, k)
    save_file({k: scores[k].contiguous() for k in kinds}, str(out / "head_scores.safetensors"))
    console.print(f"heatmaps and head_scores.safetensors written to {out}")


def patch_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    task: str = typer.Option("ioi", help="ioi, induction, greater-than, docstring or facts"),
    site: str = typer.Option("z", help="resid_pre, attn_out, mlp_out, z, q, k, v or pattern"),
    by: str = typer.Option("head", help="layer, pos (layer x position) or head (layer x head)"),
    method: str = typer.Option("activation", help="activation or attribution"),
    n: int = typer.Option(8, help="prompt pairs"),
    direction: str = typer.Option("denoise", help="denoise (clean into corrupted) or noise"),
    top: int = typer.Option(10, help="how many top entries to list"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("uncover-out/patch"), help="folder for the heatmap and the result"),
) -> None:
    """Activation or attribution patching on a task, normalised to 0 (corrupted) .. 1 (clean)."""
    from uncover.components import patching as P
    from uncover.components import plots
    from uncover.data.tasks import make_task

    if method not in ("activation", "attribution"):
        raise typer.BadParameter(f"--method must be activation or attribution, not {method!r}")
    if n < 1:
        raise typer.BadParameter("--n must be at least 1")
    m = _load(model)
    with console.status(f"building the {task} task ..."):
        t = make_task(m, task, n=n, seed=seed)
    kwargs = {"progress": RichProgress()} if method == "activation" else {}
    result = P.patch_task(m, t, site=site, by=by, method=method, direction=direction, **kwargs)
    console.print(f"{t.name}: {t.metric_unit} clean {result.clean_metric:.3f}, corrupted {result.corrupt_metric:.3f} "
                  f"({len(t)} pairs, {method} patching, {direction})")
    table = Table("site", "restored (0 corrupted .. 1 clean)")
    for label, v in result.top(top):
        table.add_row(label, f"{v:.3f}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / f"{t.name}_{site}_{by}_{method}")
    values = result.values
    if by == "head":
        fig = plots.head_heatmap(values.tolist(), f"{t.name}: {method} patching of {site}", "restored",
                                 [(l, h, v) for l, h, v in _top_heads(values, 5)], diverging=True)
    elif by == "pos":
        fig = plots.layer_pos_heatmap(values.tolist(), m.to_str_tokens(t.clean[0]), f"{t.name}: {method} patching of {site}")
    else:
        fig = plots.lines(list(range(values.shape[0])), {site: values.tolist()}, f"{t.name}: {method} patching of {site}",
                          "layer", "restored")
    console.print(f"plot written to {_write_figure(fig, out, f'{t.name}_{site}_{by}_{method}')}")


def _top_heads(values, k):
    from uncover.components.heads import top_heads

    return top_heads(values, k)


def register(app: typer.Typer) -> None:
    """Add `lens`, `heads` and `patch` to the main app."""
    app.command("lens")(lens_command)
    app.command("heads")(heads_command)
    app.command("patch")(patch_command)
