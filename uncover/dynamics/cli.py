"""`uncover grok`, `uncover memorize`, `uncover induction-phase`, `uncover double-descent`: each trains toy
models, prints the measured results, and writes plots (HTML, one shared offline plotly.js) and a JSON summary."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from uncover.core.progress import RichProgress

console = Console()


def _write(out: Path, name: str, summary: dict[str, Any], figures: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1))
    for fig_name, fig in figures.items():
        fig.write_html(str(out / f"{fig_name}.html"), include_plotlyjs="directory")
    console.print(f"wrote {out / (name + '.json')} and {len(figures)} plot(s) to {out}/")


def _threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def _check_prime(p: int) -> None:
    if p < 3 or any(p % d == 0 for d in range(2, int(p**0.5) + 1)):
        raise typer.BadParameter(f"p={p} must be an odd prime (e.g. 59, 97, 113)")


def grok_command(
    p: int = typer.Option(113, help="modulus (an odd prime)"),
    op: str = typer.Option("add", help="add | sub (progress measures need these; div and poly also train)"),
    train_frac: float = typer.Option(0.3, help="fraction of all pairs used for training"),
    steps: int = typer.Option(25_000, help="maximum training steps (full batch)"),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1.0),
    d_model: int = typer.Option(128),
    stop_at: float = typer.Option(0.0, help="stop once test accuracy reaches this (0: train all steps)"),
    quick: bool = typer.Option(False, help="a quick configuration (p=59, 60% train, lr 3e-3): ~400 steps"),
    slingshots: bool = typer.Option(False, help="also train with Adam and no weight decay and find loss spikes"),
    norm_sweep: bool = typer.Option(False, help="also sweep fixed weight norms and init scale x weight decay "
                                    "(LU curves) on an MLP"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for these small models on a busy CPU)"),
    out: Path = typer.Option(Path("uncover-out/grok"), help="folder for checkpoints, plots and JSON"),
) -> None:
    """Grokking on modular arithmetic with progress measures and the three phases (Nanda et al. 2023)."""
    from uncover.dynamics import plots
    from uncover.dynamics.grokking import GrokConfig, run_grokking

    _threads(threads)
    _check_prime(p)
    if op not in ("add", "sub"):
        raise typer.BadParameter(f"op={op!r}: progress measures are defined for 'add' and 'sub'")
    if quick:
        cfg = GrokConfig(p=59, train_frac=0.6, lr=3e-3, steps=1500, eval_every=25, measure_every=50,
                         stop_at_test_acc=stop_at or None, seed=seed)
    else:
        cfg = GrokConfig(p=p, op=op, train_frac=train_frac, steps=steps, lr=lr, weight_decay=weight_decay,
                         d_model=d_model, d_mlp=4 * d_model, stop_at_test_acc=stop_at or None, seed=seed,
                         measure_every=max(steps // 5000, 1) * 100)  # every 100 steps; ~50 snapshots when longer
    with RichProgress() as progress:
        result = run_grokking(cfg, out_dir=out / "run", progress=progress)
    summary = result.summary()
    table = Table("phase", "steps")
    for phase, span in result.phases["ranges"].items():
        table.add_row(phase.replace("_", " "), f"{span[0]}-{span[1]}" if span else "not reached")
    console.print(table)
    last = result.curves[-1]
    console.print(f"{result.steps_done} steps in {result.train_seconds:.0f} s; final train acc {last['train_acc']:.3f}, "
                  f"test acc {last['test_acc']:.3f}; key frequencies {result.key_freqs}")
    figures = {"grok_curves": plots.grok_curves(summary), "grok_measures": plots.grok_measures(summary),
               "embed_frequencies": plots.embed_frequencies(summary)}
    if slingshots:
        from uncover.dynamics.norms import run_slingshots

        with RichProgress() as progress:
            sling = run_slingshots(progress=progress).summary()
        summary["slingshots"] = sling
        figures["slingshots"] = plots.slingshots(sling)
        onset = f"step {sling['onset']}" if sling["onset"] else "never"
        console.print(f"{len(sling['spikes'])} slingshot(s) with Adam and no weight decay at steps "
                      f"{[s['peak'] for s in sling['spikes']]}; test accuracy reached 50%: {onset}")
    if norm_sweep:
        from uncover.dynamics.norms import init_decay_sweep, norm_sweep as sweep

        rows = sweep([4, 8, 16, 24, 32, 48, 64])
        free = init_decay_sweep([0.5, 1.0, 3.0], [0.0, 0.1, 1.0])
        summary["norm_sweep"], summary["init_decay_sweep"] = rows, free
        figures["lu_curves"] = plots.lu_curves(rows, free)
        best = min(rows, key=lambda r: r["test_loss"])
        console.print(f"lowest test loss {best['test_loss']:.3f} at weight norm {best['norm']}")
    _write(out, "grok_summary", summary, figures)


def memorize_command(
    p: int = typer.Option(43, help="modulus (an odd prime)"),
    corrupt_frac: float = typer.Option(0.2, help="fraction of training labels replaced by wrong ones"),
    weight_decay: float = typer.Option(1.0),
    width: int = typer.Option(256, help="hidden neurons of the MLP"),
    steps: int = typer.Option(2000),
    lr: float = typer.Option(5e-3),
    act: str = typer.Option("quadratic", help="quadratic | relu | gelu"),
    phase_diagram: bool = typer.Option(False, help="also sweep corruption x weight decay (9 runs)"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1),
    out: Path = typer.Option(Path("uncover-out/memorize")),
) -> None:
    """Corrupted labels on modular addition: neuron IPR, pruning memorising neurons, phases (Doshi et al. 2023)."""
    from uncover.dynamics import plots
    from uncover.dynamics.memorization import MemorizationConfig, phase_diagram as sweep, run_memorization

    _threads(threads)
    _check_prime(p)
    if not 0.0 <= corrupt_frac < 1.0:
        raise typer.BadParameter(f"--corrupt-frac must be in [0, 1), got {corrupt_frac}")
    cfg = MemorizationConfig(p=p, corrupt_frac=corrupt_frac, weight_decay=weight_decay, width=width, steps=steps,
                             lr=lr, act_fn=act, seed=seed)
    with RichProgress() as progress:
        result = run_memorization(cfg, progress=progress)
    summary = result.summary()
    table = Table("pruned", "test acc", "corrupted: memorised", "corrupted: true label", "train acc")
    for row in result.pruning:
        table.add_row(f"{row['pruned_frac']:.0%}", f"{row['test_acc']:.3f}", f"{row.get('corrupt_mem_acc', 0):.3f}",
                      f"{row.get('corrupt_true_acc', 0):.3f}", f"{row['train_acc']:.3f}")
    console.print(table)
    console.print(f"phase: {result.phase}")
    figures = {"memorization": plots.memorization(summary)}
    if phase_diagram:
        with RichProgress() as progress:
            rows = sweep([0.1, 0.3, 0.5], [0.1, 1.0, 3.0], base=cfg, progress=progress)
        summary["phase_diagram"] = rows
        figures["phase_diagram"] = plots.phase_diagram(rows)
    _write(out, "memorize_summary", summary, figures)


def induction_command(
    steps: int = typer.Option(800),
    d_vocab: int = typer.Option(64),
    seq_len: int = typer.Option(32),
    d_model: int = typer.Option(64),
    lr: float = typer.Option(3e-3),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1),
    out: Path = typer.Option(Path("uncover-out/induction-phase")),
) -> None:
    """Train a 2-layer attention-only transformer on repeated sequences; ICL and head scores over training."""
    from uncover.dynamics import plots
    from uncover.dynamics.induction import InductionConfig, run_induction

    _threads(threads)
    if seq_len < 8 or d_vocab < 8:
        raise typer.BadParameter("--seq-len and --d-vocab must be at least 8")
    cfg = InductionConfig(steps=steps, d_vocab=d_vocab, seq_len=seq_len, d_model=d_model, lr=lr, seed=seed)
    with RichProgress() as progress:
        result = run_induction(cfg, progress=progress)
    summary = result.summary()
    last = result.curves[-1]
    console.print(f"phase change: ICL score falls fastest at step {result.icl_change_step}, best induction score "
                  f"rises fastest at step {result.induction_change_step}; final ICL score {last['icl_score']:.2f} "
                  f"nats, induction score {last['induction_score']:.2f}, previous-token score {last['prev_token_score']:.2f}")
    _write(out, "induction_summary", summary, {"induction": plots.induction(summary)})


def double_descent_command(
    n_train: int = typer.Option(100),
    noise: float = typer.Option(0.5, help="label noise (std) on training targets"),
    repeats: int = typer.Option(5),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1),
    out: Path = typer.Option(Path("uncover-out/double-descent")),
) -> None:
    """Model-wise double descent: test loss against width of a random-features model with label noise."""
    from uncover.dynamics import plots
    from uncover.dynamics.double_descent import DoubleDescentConfig, run_double_descent

    _threads(threads)
    if n_train < 10:
        raise typer.BadParameter("--n-train must be at least 10")
    fractions = (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2, 3, 5, 10, 20)
    widths = tuple(sorted({max(1, int(round(f * n_train))) for f in fractions}))
    cfg = DoubleDescentConfig(n_train=n_train, noise=noise, n_repeats=repeats, seed=seed, widths=widths)
    result = run_double_descent(cfg)
    table = Table("width", "train MSE", "test MSE")
    for w, a, b in zip(result.widths, result.train_loss, result.test_loss):
        table.add_row(str(w), f"{a:.4f}", f"{b:.4f}")
    console.print(table)
    console.print(f"test loss peaks at width {result.peak_width} (n_train = {n_train})")
    summary = result.summary()
    _write(out, "double_descent_summary", summary, {"double_descent": plots.double_descent(summary)})


def register(app: typer.Typer) -> None:
    app.command("grok")(grok_command)
    app.command("memorize")(memorize_command)
    app.command("induction-phase")(induction_command)
    app.command("double-descent")(double_descent_command)

