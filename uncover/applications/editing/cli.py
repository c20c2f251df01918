"""`uncover trace` and `uncover edit`: causal tracing and fact editing on the command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from uncover.cli import load_model as _load

from uncover.errors import UncoverError

console = Console()


def _progress(items, description: str = "working", total=None):
    return track(items, description=description, total=total, console=console)


def _digests(model) -> dict[str, str]:
    """SHA-256 of every parameter's bytes, by name: compares weights bit for bit without a second copy."""
    import hashlib

    import torch

    out = {}
    with torch.no_grad():
        for name, p in model.hf.named_parameters():
            raw = p.detach().cpu().contiguous().view(torch.uint8).numpy()
            out[name] = hashlib.sha256(raw.tobytes()).hexdigest()
    return out


def trace_command(
    model: str = typer.Argument(..., help="bundled name, HF id, local dir or .gguf"),
    prompt: str = typer.Argument(..., help="prompt that recalls a fact, e.g. 'The Eiffel Tower is located in the city of'"),
    subject: str = typer.Option(..., help="the subject as it appears in the prompt (its tokens get noised)"),
    target: Optional[str] = typer.Option(None, help="attribute to track, e.g. ' Paris' (default: greedy next token)"),
    kinds: str = typer.Option("resid,mlp,attn", help="comma-separated states to restore: resid, mlp, attn"),
    samples: int = typer.Option(5, help="noise samples per restoration (Meng et al. use 10)"),
    window: int = typer.Option(10, help="layers restored together for mlp and attn"),
    noise: float = typer.Option(3.0, help="noise scale in embedding standard deviations"),
    out: Path = typer.Option(Path("uncover-out/trace"), help="folder for the heatmap and the result files"),
) -> None:
    """Causal tracing: the indirect effect of each (token, layer) state on the correct attribute."""
    from uncover.applications.editing import plots
    from uncover.applications.editing.tracing import trace

    kind_list = [k.strip() for k in kinds.split(",") if k.strip()]
    if subject not in prompt:
        raise typer.BadParameter(f"--subject {subject!r} must appear in the prompt {prompt!r}")
    m = _load(model)
    result = trace(m, prompt, subject, target, kinds=kind_list, window=window, n_samples=samples, noise=noise,
                   progress=_progress)
    console.print(f"target {result.target!r}: clean p={result.clean_prob:.3f}, "
                  f"corrupted p={result.corrupt_prob:.3f} (noise std {result.noise_std:.3f}, {samples} samples)")
    last_subject = result.span[1] - 1
    table = Table("state", "peak layer", "peak token", "effect", "peak at last subject token", "effect there")
    for kind in kind_list:
        layer, pos = result.peak(kind)
        layer_s, _ = result.peak(kind, position=last_subject)
        effect = result.indirect_effect(kind)
        table.add_row(kind, str(layer), f"{pos}: {result.tokens[pos]!r}", f"{effect[layer, pos]:+.3f}",
                      str(layer_s), f"{effect[layer_s, last_subject]:+.3f}")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    fig = plots.trace_heatmaps({k: result.indirect_effect(k).T.tolist() for k in kind_list}, result.tokens,
                               f"causal trace of {prompt!r} -> {result.target!r}",
                               highlight_rows=range(*result.span))
    fig.write_html(str(out / "trace.html"), include_plotlyjs=True)
    result.save(out / "trace")
    console.print(f"heatmap written to {out / 'trace.html'}; the result to {out / 'trace'}/")


def edit_command(
    model: str = typer.Argument(..., help="bundled name, HF id, local dir or .gguf"),
    subject: str = typer.Option(..., help="subject whose fact changes, e.g. 'Eiffel Tower'"),
    prompt: str = typer.Option(..., help="template with {} for the subject, e.g. '{} is located in'"),
    target: str = typer.Option(..., help="new continuation, e.g. ' Rome' (mind the leading space)"),
    method: str = typer.Option("rome", help="rome or memit"),
    layer: Optional[int] = typer.Option(None, help="edit layer (default: from causal tracing of the prompt)"),
    paraphrase: list[str] = typer.Option([], help="extra paraphrase template(s) with {} (repeatable)"),
    neighbour: list[str] = typer.Option([], help="prompt(s) about other subjects that must not change"),
    cov_tokens: int = typer.Option(20_000, help="corpus tokens for the key covariance (cached per layer)"),
    out: Path = typer.Option(Path("uncover-out/edit"), help="folder for the scores and the saved edit"),
) -> None:
    """Rewrite one fact with ROME (or MEMIT), show generations and scores before and after, then restore."""
    import torch

    from uncover.applications.editing.evaluate import EditRecord, score_records
    from uncover.applications.editing.memit import MemitConfig, memit
    from uncover.applications.editing.rome import EditRequest, RomeConfig, rome
    from uncover.data.facts import FACTS, RELATIONS, known_facts

    if method not in ("rome", "memit"):
        raise typer.BadParameter(f"--method must be rome or memit, not {method!r}")
    try:
        request = EditRequest(subject, prompt, target)
        paraphrases = [EditRequest(subject, p, target).text for p in paraphrase]
    except UncoverError as e:
        raise typer.BadParameter(str(e)) from e
    m = _load(model)
    text = request.text
    with torch.no_grad():
        old = m.tokenizer.decode([int(m(m.to_tokens(text))[0, -1].argmax())])
    # a prompt that is a built-in relation template brings its paraphrases and known neighbours
    relation = next((r for r in RELATIONS.values() if r.templates[0] == prompt or prompt in r.templates), None)
    neighbours = []
    if relation is not None:
        paraphrases += [t.format(subject) for t in relation.templates if t != prompt]
        same = [f for f in FACTS if f.relation == relation.name and f.subject != subject and f.attribute != target]
        neighbours = [(f.prompt(), f.attribute) for f in known_facts(m, same)[:5]]
    if neighbour:
        with torch.no_grad():
            for p in neighbour:
                neighbours.append((p, m.tokenizer.decode([int(m(m.to_tokens(p))[0, -1].argmax())])))
    record = EditRecord(request, old, paraphrases, neighbours, [text] + paraphrases[:1])
    before = score_records(m, [record], generate=False)[0]
    gen_prompts = record.generation_prompts
    gens_before = m.generate(gen_prompts, max_new_tokens=25)
    weights_before = _digests(m)
    with console.status(f"computing the {method.upper()} edit ..."):
        if method == "rome":
            edit = rome(m, request, RomeConfig(layer=layer, cov_tokens=cov_tokens))
        else:
            layers = None if layer is None else tuple(range(max(0, layer - 2), min(m.cfg.n_layers, layer + 3)))
            edit = memit(m, [request], MemitConfig(layers=layers, cov_tokens=cov_tokens))
    try:
        after = score_records(m, [record], generate=False)[0]
        gens_after = m.generate(gen_prompts, max_new_tokens=25)
    finally:
        edit.restore(m)
    console.print(f"{method.upper()} edit at layer(s) {sorted(edit.deltas)}: {text!r} {old!r} -> {target!r}")
    table = Table("prompt", "before", "after")
    for p, a, b in zip(gen_prompts, gens_before, gens_after):
        table.add_row(p, a, b)
    console.print(table)
    scores = Table("score", "before", "after")
    labels = {"rewrite": "efficacy P(new)>P(old)", "paraphrase": "paraphrase P(new)>P(old)",
              "neighbourhood": "neighbourhood P(true)>P(new)", "rewrite_acc": "efficacy accuracy (token-level)",
              "paraphrase_acc": "paraphrase accuracy (token-level)",
              "neighbourhood_acc": "neighbourhood accuracy (token-level)"}
    for k, label in labels.items():
        scores.add_row(label, f"{100 * before[k]:.0f}%", f"{100 * after[k]:.0f}%")
    console.print(scores)
    changed = [n for n, d in _digests(m).items() if weights_before.get(n) != d]
    console.print(f"{len(paraphrases)} paraphrases, {len(neighbours)} neighbourhood prompts.")
    if changed:
        console.print(f"[red]warning:[/red] after restoring, {len(changed)} of {len(weights_before)} weight tensors "
                      f"differ from before the edit: {', '.join(changed[:5])}", highlight=False)
    else:
        console.print(f"Restored: all {len(weights_before)} weight tensors are bit for bit what they were before "
                      "the edit (SHA-256 of their bytes compared).")
    out.mkdir(parents=True, exist_ok=True)
    edit.save(out / "edit")
    (out / "scores.json").write_text(json.dumps({
        "request": {"subject": subject, "prompt": prompt, "target": target}, "old": old, "before": before,
        "after": after, "generations_before": gens_before, "generations_after": gens_after,
        "layers": sorted(edit.deltas), "neighbours": neighbours, "paraphrases": paraphrases}, indent=1))
    console.print(f"edit saved to {out / 'edit'}/; scores to {out / 'scores.json'}")
    if changed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_command)
    app.command("edit")(edit_command)
