"""Othello-GPT at the papers' size on a GPU: 8x8 games, 8 layers, d_model 512, 8 heads, millions of games.

    .venv/bin/python benchmarks/othello_gpu.py                    # the "gpu" configuration (needs a GPU)
    .venv/bin/python benchmarks/othello_gpu.py --steps 20000      # shorter
    .venv/bin/python benchmarks/othello_gpu.py --tiny --device cpu   # the same pipeline at toy size (tested)

Generates the training games on the device, trains with the dynamics trainer (checkpoints, resume, JSONL
metrics in --out), then probes every layer and runs both flip interventions. Prints one table of measured
numbers next to the papers' (Li et al. 2022: top-1 legal > 99.9% with synthetic games; Nanda et al. 2023:
linear mine/theirs probe ~99% per square at the best layer, black/white far lower).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from uncover.core.results import RichProgress, no_progress
from uncover.representations.world.analysis import StudyConfig, study
from uncover.representations.world.model import default_run_dir, named_config, train_othello


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="8x8 games but a toy model and data (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--games", type=int, default=None, help="training games (default 2,000,000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: uncover's cache, othello/gpu)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    overrides = {"device": args.device}
    if args.tiny:
        tiny = named_config("tiny")
        overrides.update(size=8, n_layers=tiny.n_layers, d_model=tiny.d_model, n_heads=tiny.n_heads,
                         d_mlp=tiny.d_mlp, n_games=200, n_eval_games=40, steps=10, batch_size=16, eval_every=5,
                         warmup_steps=2, checkpoints="none")
    if args.steps:
        overrides["steps"] = args.steps
    if args.games:
        overrides["n_games"] = args.games
    cfg = named_config("gpu", **overrides)
    out = args.out or default_run_dir("gpu-tiny" if args.tiny else "gpu")
    progress = no_progress if args.no_progress else RichProgress()
    t0 = time.perf_counter()
    run = train_othello(cfg, out_dir=out, progress=progress)
    sizes = StudyConfig(probe_games=60, probe_steps=30, probe_hidden=16, flips=20, gradient_steps=10) if args.tiny \
        else StudyConfig(probe_games=2000, probe_steps=400, flips=1000)
    summary = study(run, sizes)
    seconds = time.perf_counter() - t0
    p, last = summary["probes"], run.final
    best = p["layers"].index(p["best_layer"])
    table = Table("measure", "uncover", "paper")
    table.add_row("top-1 legal move rate (held-out)", f"{last['legal_acc']:.4f}", "> 0.999 (Li et al.)")
    table.add_row("legal-set F1", f"{last['legal_f1']:.4f}", "")
    table.add_row(f"linear mine/theirs probe, layer {p['best_layer']}",
                  f"{p['accuracy']['mine/linear']['by_layer'][best]:.4f}", "~0.99 (Nanda et al.)")
    table.add_row(f"linear black/white probe, layer {p['best_layer']}",
                  f"{p['accuracy']['color/linear']['by_layer'][best]:.4f}", "far lower (Nanda et al.)")
    table.add_row("MLP black/white probe, best layer", f"{max(p['accuracy']['color/mlp']['by_layer']):.4f}",
                  "~0.98 (Li et al.)")
    for method, r in summary["interventions"].items():
        table.add_row(f"{method} flip: legal for edited / original board",
                      f"{r['share_edited']:.3f} / {r['share_original']:.3f} (n={r['n']})", "edited >> original")
    table.add_row("steps, wall seconds (train + study)", f"{last['step']}, {seconds:.0f}", "")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    console = Console()
    console.print(table)
    console.print(f"device: {device}; run saved in {out}")
    return summary


if __name__ == "__main__":
    main()
