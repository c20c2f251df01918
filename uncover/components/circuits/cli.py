"""`uncover circuit MODEL --task ioi --method eap-ig --out DIR`: discover, evaluate and draw a circuit."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def circuit_command(
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    task: str = typer.Option("ioi", help="ioi, induction, greater-than, docstring or facts"),
    method: str = typer.Option("eap-ig", help="eap, eap-ig or acdc (acdc tests edges one by one: small models)"),
    ablation: str = typer.Option("corrupt", help="corrupt (the task's corrupted prompts), zero, mean or resample"),
    n: int = typer.Option(16, help="prompt pairs"),
    steps: int = typer.Option(5, help="EAP-IG integration steps"),
    target: float = typer.Option(0.8, help="faithfulness the reported circuit must reach"),
    top: int = typer.Option(15, help="how many top edges to list"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("uncover-out/circuit"), help="folder for the scores, circuit (JSON circuit graph, DOT) and plots"),
) -> None:
    """Score every edge on a task, find the smallest top-n circuit reaching the target faithfulness, save it."""
    from uncover.cli import load_model
    from uncover.components.circuits import discover, faithfulness_curve, select, write_circuit
    from uncover.components.circuits.export import circuit_dict
    from uncover.components.circuits.patching import EdgePatcher
    from uncover.components.circuits.plots import circuit_figure, faithfulness_figure
    from uncover.core.results import RichProgress
    from uncover.data.tasks import make_task

    if n < 1:
        raise typer.BadParameter("--n must be at least 1")
    if not 0 < target <= 1:
        raise typer.BadParameter("--target must be in (0, 1]")
    m = load_model(model)
    with console.status(f"building the {task} task and caching source values ..."):
        t = make_task(m, task, n=n, seed=seed)
        patcher = EdgePatcher.build(m, t, ablation, seed=seed)
    scores = discover(m, t, method, steps=steps, patcher=patcher, progress=RichProgress())
    g = patcher.graph
    console.print(f"{t.name}: {g.n_edges:,} edges; {t.metric_unit} model {scores.metric_clean:.3f}, fully ablated "
                  f"({ablation}) {scores.metric_ablated:.3f}; {method} took {scores.seconds:.1f} s")
    table = Table("edge", f"score ({t.metric_unit})" if method != "acdc" else "score (tau kept at)")
    for name, v in scores.top(top):
        table.add_row(name, f"{v:+.4f}")
    console.print(table)
    curve = faithfulness_curve(m, t, scores, patcher=patcher, progress=RichProgress())
    table = Table("edges kept", "share of all", "faithfulness")
    for e, f in zip(curve.edges, curve.faithfulness):
        table.add_row(f"{e:,}", f"{100 * e / g.n_edges:.2f}%", f"{f:.3f}")
    console.print(table)
    curve.target = target
    i = curve.smallest()
    if i is None:
        i = max(range(len(curve.edges)), key=lambda j: curve.faithfulness[j])
        console.print(f"[yellow]no circuit tried reaches faithfulness {target:g}; saving the most faithful "
                      f"({curve.edges[i]:,} edges, {curve.faithfulness[i]:.3f})[/yellow]")
    else:
        console.print(f"smallest circuit reaching faithfulness {target:g}: {curve.edges[i]:,} edges "
                      f"({100 * curve.edges[i] / g.n_edges:.2f}% of all), faithfulness {curve.faithfulness[i]:.3f}")
    keep = select(g, scores.scores, top_n=curve.requested[i])
    out.mkdir(parents=True, exist_ok=True)
    scores.save(out / f"{t.name}_{method}_scores")
    curve.save(out / f"{t.name}_{method}_faithfulness")
    title = f"{t.name} circuit ({method}, {curve.edges[i]} edges)"
    meta = {"model": m.name, "task": t.name, "metric": t.metric_unit, "method": method, "ablation": ablation,
            "title": title, "faithfulness": curve.faithfulness[i]}
    paths = write_circuit(out, g, scores.scores, keep, f"{t.name}_{method}_circuit", **meta)
    figure = circuit_figure(circuit_dict(g, scores.scores, keep), title)
    figure.write_html(str(out / f"{t.name}_{method}_circuit.html"), include_plotlyjs=True)
    faith = faithfulness_figure({method: {"edges": curve.edges, "faithfulness": curve.faithfulness}}, g.n_edges,
                                target, f"{t.name}: faithfulness of the top-n circuits ({ablation} ablation)")
    faith.write_html(str(out / f"{t.name}_{method}_faithfulness.html"), include_plotlyjs=True)
    console.print(f"written to {out}: scores, faithfulness curve, {', '.join(p.name for p in paths)}, two plots; "
                  f"open the circuit in the explorer with: uncover serve {model} --circuit {paths[0]}")


def register(app: typer.Typer) -> None:
    app.command("circuit")(circuit_command)
