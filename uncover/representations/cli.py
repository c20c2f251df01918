"""`uncover probe`, `uncover steer`, `uncover reft`: the representations area on the command line."""
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
_progress = RichProgress()  # one rich bar per long-running step


def _write_figure(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.html"
    fig.write_html(str(path), include_plotlyjs=True)
    return path


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers like '-4,0,4', got {text!r}")


def probe_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    family: str = typer.Option("cities", help="truth family to train on (see uncover.data.truth.FAMILIES)"),
    transfer: str = typer.Option("translations,facts,neg_cities", help="held-out families, comma-separated"),
    probe: str = typer.Option("logistic", help="logistic | mass_mean | mass_mean_iid | sparse | mlp"),
    position: str = typer.Option("last", help="token read: last | mean | an integer index"),
    n: int = typer.Option(200, help="statements per family"),
    control: bool = typer.Option(True, help="also run the control task at the best layer (selectivity)"),
    out: Path = typer.Option(Path("uncover-out/probe"), help="folder for plots, the sweep and the probe"),
) -> None:
    """Train a truth probe at every layer; print held-out and transfer accuracy by depth."""
    from uncover.data.truth import truth_dataset
    from uncover.representations import plots
    from uncover.representations.activations import collect_activations
    from uncover.representations.probes import layer_sweep, make_probe, pca_view, selectivity, split_indices

    pos = int(position) if position.lstrip("-").isdigit() else position
    m = _load(model)
    train = truth_dataset(family, n)
    held = {f: truth_dataset(f, n) for f in transfer.split(",") if f}
    acts = collect_activations(m, train.texts, position=pos, progress=_progress)
    held_acts = {f: (collect_activations(m, d.texts, position=pos), d.labels) for f, d in held.items()}
    sweep = layer_sweep(acts, train.labels, probe, transfer=held_acts, progress=_progress)
    table = Table("layer", "train", "held-out", *[f"-> {f}" for f in held])
    for i, l in enumerate(sweep.layers):
        table.add_row(str(l), f"{sweep.train_accuracy[i]:.2f}", f"{sweep.test_accuracy[i]:.2f}",
                      *[f"{sweep.transfer[f][i]:.2f}" for f in held])
    console.print(table)
    best = sweep.best_layer
    console.print(f"best layer {best}: held-out accuracy {float(sweep.test_accuracy.max()):.2f}")
    sweep.save(out / "sweep")
    tr, te = split_indices(train.labels)
    X, y, keys = acts[best], train.labels, train.subjects
    make_probe(probe).fit(X[tr], [y[i] for i in tr]).save(out / f"probe_layer{best}")
    if control:
        sel = selectivity(probe, X[tr], [y[i] for i in tr], [keys[i] for i in tr],
                          X[te], [y[i] for i in te], [keys[i] for i in te])
        console.print(f"control task at layer {best}: task {sel.task_accuracy:.2f}, control {sel.control_accuracy:.2f}, "
                      f"selectivity {sel.selectivity:+.2f}")
    view = pca_view(X, y)
    _write_figure(plots.accuracy_by_layer(sweep.layers, sweep.test_accuracy.tolist(), sweep.train_accuracy.tolist(),
                                          {k: v.tolist() for k, v in sweep.transfer.items()}), out, "accuracy_by_layer")
    _write_figure(plots.pca_scatter(view.coords.tolist(), view.labels.tolist(), train.texts), out, "pca")
    console.print(f"wrote {out}/")


def steer_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    method: str = typer.Option("caa", help="caa | repe | actadd | fv (function vector) | iti"),
    concept_name: str = typer.Option("sentiment", "--concept", help="sentiment | honesty | formality (caa/repe/actadd)"),
    layer: Optional[int] = typer.Option(None, help="steering layer (default: method's choice)"),
    coeffs: str = typer.Option("-8,-4,0,4,8", help="coefficients (alpha for ITI, e.g. 0,2,4,8), comma-separated"),
    task: str = typer.Option("antonyms", help="ICL task for --method fv"),
    prompt: str = typer.Option("I think that", help="prompt for sample generations"),
    out: Path = typer.Option(Path("uncover-out/steer"), help="folder for plots and results"),
) -> None:
    """Steer with a direction; print the measured behaviour shift and perplexity cost per coefficient."""
    from uncover.representations import plots

    values = _floats(coeffs)
    if method not in ("caa", "repe", "actadd", "fv", "iti"):
        raise typer.BadParameter(f"unknown method {method!r}; choose caa, repe, actadd, fv or iti")
    m = _load(model)
    if method == "fv":
        from uncover.representations.function_vectors import fv_experiment

        r = fv_experiment(m, task, layer=layer, progress=_progress)
        console.print(f"function vector for {task}: heads {r.fv.heads}, added at layer {r.fv.layer}")
        console.print(f"zero-shot accuracy on {r.n_test} held-out queries: {r.zero_shot:.2f} -> {r.zero_shot_with_fv:.2f} "
                      f"with the vector (5-shot: {r.few_shot:.2f})")
        r.fv.save(out / f"fv_{task}")
        _write_figure(plots.head_heatmap(r.fv.effects.tolist()), out, f"fv_{task}_heads")
        return
    if method == "iti":
        from uncover.data.corpus import corpus_tokens
        from uncover.data.facts import FACTS, attribute_token
        from uncover.data.truth import truth_dataset
        from uncover.representations.iti import ITI_RELATIONS, fit_iti, truth_margin
        from uncover.representations.steering import perplexity

        data = truth_dataset("cities")
        iti = fit_iti(m, data.texts, data.labels, progress=_progress)
        facts = [f for f in FACTS if f.relation in ITI_RELATIONS and attribute_token(m, f) is not None]
        text = corpus_tokens(m, 8, 64)
        table = Table("alpha", "true-false margin (nats)", "true wins", "perplexity")
        for a in values:
            hooks = iti.hooks(a, m.cfg.n_heads)
            margin, wins = truth_margin(m, facts, hooks)
            table.add_row(f"{a:g}", f"{margin:+.3f}", f"{wins:.2f}", f"{perplexity(m, text, hooks):.2f}")
        console.print(f"ITI heads: {iti.heads}")
        console.print(table)
        iti.save(out / "iti")
        return
    from uncover.representations.steering import steer

    r = steer(m, method, concept_name, layer, values, progress=_progress, sample_prompt=prompt)
    table = Table("coefficient", "concept log-odds", "perplexity", f"{prompt!r} ...")
    for k, b, p, s in zip(r.coefficients.tolist(), r.behaviour.tolist(), r.perplexity.tolist(), r.samples):
        table.add_row(f"{k:g}", f"{b:+.3f}", f"{p:.2f}", s.replace("\n", " "))
    console.print(table)
    console.print(f"monotone in the coefficient: {r.is_monotone()}")
    r.save(out / f"{method}_{concept_name}")
    _write_figure(plots.steering_curve(r.coefficients.tolist(), r.behaviour.tolist(), r.perplexity.tolist()), out,
                  f"{method}_{concept_name}")
    console.print(f"wrote {out}/")


def reft_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    task: str = typer.Option("antonyms", help="ICL task learnt zero-shot: antonyms | country_capital | english_french | uppercase"),
    kind: str = typer.Option("loreft", help="loreft | red"),
    layer: Optional[int] = typer.Option(None, help="layer to intervene on (default 2/5 of the depth)"),
    rank: int = typer.Option(4, help="LoReFT rank"),
    steps: int = typer.Option(30, help="training steps (full batch)"),
    lr: float = typer.Option(5e-3, help="learning rate"),
    out: Path = typer.Option(Path("uncover-out/reft"), help="folder for the trained intervention"),
) -> None:
    """Train a LoReFT / RED intervention on a frozen model; print accuracy and parameter counts."""
    from uncover.representations import plots
    from uncover.representations.reft import reft_experiment

    m = _load(model)
    r = reft_experiment(m, task, kind, layer, rank, steps, lr, progress=_progress)
    console.print(f"{kind} on {task}: held-out accuracy {r.accuracy_before:.2f} -> {r.accuracy_after:.2f} "
                  f"(train {r.train_accuracy_after:.2f}); {r.n_parameters:,} parameters vs {r.lora_parameters:,} "
                  f"for rank-{rank} LoRA on q,v of every layer")
    r.reft.save(out / f"{kind}_{task}")
    (out / f"{kind}_{task}.json").write_text(json.dumps({k: v for k, v in r.__dict__.items() if k != "reft"}, indent=1))
    _write_figure(plots.loss_curve(r.losses, f"{kind} training loss"), out, f"{kind}_{task}_loss")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe_command)
    app.command("steer")(steer_command)
    app.command("reft")(reft_command)
