"""`uncover prune`: score heads or neurons, remove a share, save the smaller model and measure it."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from uncover.cli import load_model as _load

console = Console()


def prune_command(
    model: str = typer.Argument(..., help="bundled name, HF id, local dir or .gguf"),
    by: str = typer.Option("gradient", help="importance: gradient, attribution, activation, magnitude, wanda, random"),
    share: float = typer.Option(0.2, help="share of units to remove, in (0, 1)"),
    unit: str = typer.Option("heads", help="heads (query heads) or neurons (MLP neurons)"),
    steps: int = typer.Option(2, help="iterative steps: re-score the remaining units after each step"),
    calibration: int = typer.Option(16, help="calibration corpus windows (128 tokens each)"),
    heldout: int = typer.Option(16, help="held-out corpus windows for perplexity"),
    out: Path = typer.Option(Path("uncover-out/pruned"), help="folder for the smaller Hugging Face model"),
    seed: int = typer.Option(0, help="seed for the corpus windows and the random baseline"),
) -> None:
    """Remove the least important heads or neurons and save a physically smaller model."""
    import torch

    from uncover.applications.pruning.curves import perplexity, prune_iteratively, split_corpus
    from uncover.applications.pruning.physical import forward_seconds, n_params, prune_model, save_pruned
    from uncover.applications.pruning.plan import check_share, n_units
    from uncover.errors import UncoverError

    share = check_share(share, "--share")
    if steps < 1:
        raise UncoverError(f"--steps must be at least 1, got {steps}")
    m = _load(model)
    n_units(m, unit)
    cal, held = split_corpus(m, calibration, heldout, 128, seed=seed)
    shares = [share * (i + 1) / steps for i in range(steps)]
    with console.status(f"scoring {unit} by {by} and removing {share:.0%} in {steps} step(s) ..."):
        plan = prune_iteratively(m, cal, by, unit, shares, seed=seed)[-1]
    with console.status("building and saving the smaller model ..."):
        pruned = prune_model(m, plan)
        folder = save_pruned(pruned, out)
        plan.save(folder / "uncover-plan")
    with torch.no_grad():
        with m.hooks(plan.hooks()):
            masked = m(held[:2])
        diff = float((pruned(held[:2]) - masked).abs().max())
    timing = held[:4]
    t_orig, t_pruned = forward_seconds(m, timing), forward_seconds(pruned, timing)
    table = Table("", "original", "pruned")
    table.add_row(f"{unit} removed", "0", f"{plan.count(unit)} ({plan.share(unit):.1%})")
    table.add_row("parameters", f"{n_params(m):,}", f"{n_params(pruned):,}")
    table.add_row("forward time (4 x 128 tokens, median of 5)", f"{t_orig * 1e3:.1f} ms", f"{t_pruned * 1e3:.1f} ms")
    table.add_row("held-out perplexity", f"{perplexity(m, held):.2f}", f"{perplexity(pruned, held):.2f}")
    console.print(table)
    console.print(f"speed-up {t_orig / t_pruned:.2f}x; max |logit difference| pruned vs masked: {diff:.2e}")
    console.print(f"saved to {folder} (uncover.load it, or transformers with trust_remote_code=True)")


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_command)
