"""`uncover othello train|probe|intervene`: Othello-GPT trained here, its board probes, and board edits."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
othello = typer.Typer(no_args_is_help=True, help="Othello-GPT: a world model trained here (Li et al. 2022; "
                      "Nanda et al. 2023).")


def _progress(items, description: str = "", total=None):
    from rich.progress import track

    return track(items, description=description, total=total, console=console)


def _threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise typer.BadParameter(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def _run_dir(run: Optional[Path]) -> Path:
    from uncover.representations.world.model import default_run_dir

    return run if run is not None else default_run_dir("cpu")


def _write(out: Path, name: str, data: dict, figures: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1))
    for fig_name, fig in figures.items():
        fig.write_html(str(out / f"{fig_name}.html"), include_plotlyjs="directory")
    console.print(f"wrote {out / (name + '.json')} and {len(figures)} plot(s) to {out}/")


def _board_text(labels: list[int], size: int, names=(".", "M", "T")) -> str:
    files = "abcdefgh"[:size]
    rows = ["   " + " ".join(files)]
    rows += [f"{r + 1:>2} " + " ".join(names[labels[r * size + c]] for c in range(size)) for r in range(size)]
    return "\n".join(rows)


@othello.command("train")
def train_command(
    config: str = typer.Option("cpu", help="cpu (6x6, minutes on a CPU) | quick | tiny | gpu (8x8, papers' size)"),
    steps: Optional[int] = typer.Option(None, help="override the configuration's training steps"),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="run folder (default: uncover's cache, where the report looks)"),
    resume: bool = typer.Option(True, help="continue from a resume file in --out when there is one"),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for small models on a busy CPU)"),
) -> None:
    """Train Othello-GPT on random legal games; prints the legal-move rate over training."""
    from uncover.representations.world import plots
    from uncover.representations.world.model import default_run_dir, named_config, train_othello

    _threads(threads)
    overrides = {"seed": seed, **({"steps": steps} if steps else {})}
    cfg = named_config(config, **overrides)
    out = out if out is not None else default_run_dir(config)
    run = train_othello(cfg, out_dir=out, progress=_progress, resume=resume)
    table = Table("step", "seconds", "eval loss", "top-1 legal", "legal-set F1")
    for r in run.metrics:
        table.add_row(str(r["step"]), f"{r['seconds']:.0f}", f"{r['loss']:.3f}", f"{r['legal_acc']:.3f}",
                      f"{r['legal_f1']:.3f}")
    console.print(table)
    console.print(f"{cfg.size}x{cfg.size}, {cfg.n_layers} layers, d_model {cfg.d_model}: top-1 legal "
                  f"{run.final['legal_acc']:.1%} after {run.final['step']} steps; {run.wall_seconds:.0f} s wall, "
                  f"{run.cpu_seconds:.0f} s CPU; saved in {out}")
    summary = run.summary()
    _write(out, "training", summary, {"training_curve": plots.training_curve(summary)})


@othello.command("probe")
def probe_command(
    run: Optional[Path] = typer.Option(None, help="trained run folder (default: the saved CPU run)"),
    moves: Optional[str] = typer.Option(None, help="also read the board after these moves, e.g. 'c2 b2 b3'"),
    games: int = typer.Option(500, help="random games whose positions train (70%) and test (30%) the probes"),
    steps: int = typer.Option(200, help="probe training steps"),
    threads: int = typer.Option(1),
    out: Path = typer.Option(Path("uncover-out/othello"), help="folder for plots and JSON"),
) -> None:
    """Linear and MLP probes for empty/mine/theirs and empty/black/white at every layer."""
    from uncover.data.othello import parse_moves, play, random_games
    from uncover.representations.world import plots
    from uncover.representations.world.analysis import board_picture
    from uncover.representations.world.model import load_run
    from uncover.representations.world.probes import board_activations, probe_sweep

    _threads(threads)
    trained = load_run(_run_dir(run))
    size = trained.config.size
    given = play(parse_moves(moves, size), size) if moves else None  # illegal moves fail here, before any work
    sample = random_games(games, size, seed=7_777)
    data = board_activations(trained.model, sample, progress=_progress)
    sweep = probe_sweep(data, steps=steps, progress=_progress)
    table = Table("layer", *[f"{k} {s}" for (s, k) in sweep.accuracy])
    for i, layer in enumerate(data.layers):
        table.add_row(str(layer), *[f"{v[i].mean():.3f}" for v in sweep.accuracy.values()])
    console.print(table)
    best = sweep.best_layer()
    console.print(f"best layer for linear mine/theirs: {data.layers[best]}; commonest-class baselines: "
                  + ", ".join(f"{s} {v.mean():.3f}" for s, v in sweep.baseline.items()))
    picture = board_picture(data, sweep, sample, best)
    if given is not None:
        one = board_activations(trained.model, given)
        last = int(one.position.max())
        row = int((one.position == last).nonzero()[0])
        probe = sweep.probes[("mine", "linear")][best]
        read = probe.predict(one.acts[best, row][None])[0].tolist()
        real = one.labels["mine"][row].tolist()
        console.print(f"after {last + 1} moves: real board (M = player to move) | probe at layer {data.layers[best]}")
        for a, b in zip(_board_text(real, size).splitlines(), _board_text(read, size).splitlines()):
            console.print(f"{a}    {b}")
    accuracy = {f"{s}/{k}": {"by_layer": v.mean(1).tolist(), "by_square": v.tolist()} for (s, k), v in sweep.accuracy.items()}
    summary = {"layers": data.layers, "accuracy": accuracy, "baseline": {s: v.mean().item() for s, v in sweep.baseline.items()},
               "best_layer": data.layers[best], "board": picture}
    _write(out, "probes", summary, {"probe_accuracy": plots.probe_accuracy(summary), "board": plots.board(picture)})


@othello.command("intervene")
def intervene_command(
    run: Optional[Path] = typer.Option(None, help="trained run folder (default: the saved CPU run)"),
    moves: Optional[str] = typer.Option(None, help="edit one position: the moves so far, e.g. 'c2 b2 b3'"),
    square: Optional[str] = typer.Option(None, help="with --moves: the occupied square to flip, e.g. 'c3'"),
    method: str = typer.Option("linear", help="linear (Nanda: probe direction) | gradient (Li: steps on the residual)"),
    flips: int = typer.Option(300, help="without --moves: how many random positions to edit"),
    games: int = typer.Option(500, help="random games for the probes (and the edited positions)"),
    threads: int = typer.Option(1),
    out: Path = typer.Option(Path("uncover-out/othello"), help="folder for plots and JSON"),
) -> None:
    """Flip one square of the board in the residual stream and score the model's next moves."""
    from uncover.data.othello import parse_moves, parse_square, play, random_games, square_name, tokens_to_moves
    from uncover.representations.world import plots
    from uncover.representations.world.interventions import METHODS, choose_flips, flips_for, intervene
    from uncover.representations.world.model import load_run
    from uncover.representations.world.probes import board_activations, probe_sweep

    _threads(threads)
    if method not in METHODS:
        raise typer.BadParameter(f"--method must be one of {METHODS}, got {method!r}")
    if (moves is None) != (square is None):
        raise typer.BadParameter("give --moves and --square together (or neither, for random positions)")
    trained = load_run(_run_dir(run))
    size = trained.config.size
    edit = None
    if moves is not None:
        given = play(parse_moves(moves, size), size)  # illegal moves fail here, before any work
        edit = flips_for(given, parse_square(square, size))
    sample = random_games(games, size, seed=7_777)
    data = board_activations(trained.model, sample, progress=_progress)
    sweep = probe_sweep(data, kinds=("linear",), schemes=("mine",), progress=_progress)
    best = sweep.best_layer()
    layers = list(range(best, len(data.layers)))
    probes = sweep.probes[("mine", "linear")]
    target = edit if edit is not None else choose_flips(sample, flips)
    result = intervene(trained.model, target, probes, layers, method=method, progress=_progress)
    s = result.summary()
    if edit is not None:
        names = lambda legal: " ".join(square_name(int(q), size) for q in tokens_to_moves(legal.nonzero().flatten(), size))  # noqa: E731
        console.print(f"legal now: {names(edit.legal_original[0])}\nlegal after flipping {square}: "
                      f"{names(edit.legal_edited[0])}")
        before, after = (square_name(int(tokens_to_moves(p, size)), size) for p in (result.base_predictions[0],
                                                                                  result.predictions[0]))
        console.print(f"model's top move: {before} before the edit, {after} after ({method} edit at layers "
                      f"{layers[0]}-{layers[-1]})")
    else:
        console.print(f"{s['n']} positions, {method} edit at layers {layers[0]}-{layers[-1]}: top-1 legal for the "
                      f"edited board {s['share_edited']:.1%}, for the original {s['share_original']:.1%} "
                      f"(without the edit {s['base_share_edited']:.1%} vs {s['base_share_original']:.1%})")
    _write(out, f"intervene_{method}", s, {} if edit is not None else
           {f"intervene_{method}": plots.interventions({method: s})})


def register(app: typer.Typer) -> None:
    app.add_typer(othello, name="othello")
