"""Grokking speed: uncover's trainer vs a plain PyTorch loop on Nanda et al. (2023)'s configuration.

    .venv/bin/python benchmarks/grokking.py                 # p=113, 30% train, d_model 128, wd 1, lr 1e-3
    .venv/bin/python benchmarks/grokking.py --quick         # the report's quick config (p=59, 60%, lr 3e-3)
    .venv/bin/python benchmarks/grokking.py --threads 2 --timing-steps 30

Both loops train the same model from the same initialisation. The plain loop is what one writes first:
the full forward on every position, the unfused AdamW, evaluation with a second full forward. uncover's
loop computes only the answer position (the only one the loss reads), gathers layer-0 attention from
per-(token, position) tables, uses fused AdamW and one batched evaluation over all pairs.
Prints ms/step for both (measured side by side), then trains uncover's loop until test accuracy >= 99%
and reports the wall and CPU time to memorise (train acc >= 99%) and to generalise, with the load average.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from uncover.dynamics.data import modular_data
from uncover.dynamics.grokking import GrokConfig
from uncover.dynamics.models import ToyTransformer
from uncover.dynamics.tasks import ModularTask
from uncover.dynamics.trainer import TrainConfig, Trainer, resolve_device


def plain_loop_ms(cfg: GrokConfig, steps: int, device: torch.device) -> float:
    """ms per step of a plain loop: full forward, unfused AdamW, eval every 100 steps on the test set."""
    data = modular_data(cfg.p, cfg.op, cfg.train_frac, seed=cfg.seed)
    model = ToyTransformer(cfg.model_config(), seed=cfg.seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas)
    (x, y), (xt, yt) = [(a.to(device), b.to(device)) for a, b in (data.train, data.test)]
    times = []
    for step in range(steps + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).logits[:, -1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            with torch.no_grad():
                float(F.cross_entropy(model(xt).logits[:, -1], yt))
        float(loss.detach())  # wait for the device
        times.append(time.perf_counter() - t0)
    return 1000 * sum(times[2:]) / steps  # the first two steps are warm-up


def uncover_trainer(cfg: GrokConfig, steps: int, stop: bool, device: torch.device) -> Trainer:
    data = modular_data(cfg.p, cfg.op, cfg.train_frac, seed=cfg.seed)
    model = ToyTransformer(cfg.model_config(), seed=cfg.seed)
    train = TrainConfig(steps=steps, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=cfg.betas,
                        warmup_steps=cfg.warmup_steps, eval_every=cfg.eval_every, checkpoints="none",
                        stop_at={"test_acc": 0.99} if stop else {}, device=str(device))
    return Trainer(model, ModularTask(data, device), train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the report's quick config instead of Nanda's")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--timing-steps", type=int, default=20, help="steps timed for ms/step")
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--skip-full-run", action="store_true")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (a GPU when one is present)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if args.quick:
        cfg = GrokConfig(p=59, train_frac=0.6, lr=3e-3, eval_every=25)
    else:
        cfg = GrokConfig(eval_every=100)
    console = Console()
    console.print(f"config: p={cfg.p} train_frac={cfg.train_frac} d_model={cfg.d_model} d_mlp={cfg.d_mlp} "
                  f"lr={cfg.lr} wd={cfg.weight_decay}; device {device}; threads={args.threads}; load avg {os.getloadavg()}")

    plain = plain_loop_ms(cfg, args.timing_steps, device)
    fast_trainer = uncover_trainer(cfg, args.timing_steps + 2, stop=False, device=device)
    t0 = time.perf_counter()
    fast_trainer.fit()
    fast = 1000 * fast_trainer.seconds / (args.timing_steps + 2)
    table = Table(title="ms per full-batch step (same process, side by side)")
    for col in ("loop", "ms/step", "steps/s", "speed-up"):
        table.add_column(col)
    table.add_row("plain PyTorch", f"{plain:.1f}", f"{1000 / plain:.1f}", "1.00x")
    table.add_row("uncover Trainer", f"{fast:.1f}", f"{1000 / fast:.1f}", f"{plain / fast:.2f}x")
    console.print(table)
    if args.skip_full_run:
        return

    trainer = uncover_trainer(cfg, args.max_steps, stop=True, device=device)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    marks: dict[str, tuple[int, float, float]] = {}

    def mark(step, row, model):
        now = (step, time.perf_counter() - wall0, time.process_time() - cpu0)
        if row["train_acc"] >= 0.99 and "memorised" not in marks:
            marks["memorised"] = now
        if row["test_acc"] >= 0.99 and "generalised" not in marks:
            marks["generalised"] = now

    trainer.on_eval = mark
    result = trainer.fit()
    table = Table(title=f"uncover Trainer until test accuracy >= 99% (load avg now {os.getloadavg()[0]:.1f})")
    for col in ("event", "step", "wall s", "CPU s", "plain loop est. wall s"):
        table.add_column(col)
    for event in ("memorised", "generalised"):
        if event in marks:
            step, wall, cpu = marks[event]
            table.add_row(event, str(step), f"{wall:.0f}", f"{cpu:.0f}", f"{step * plain / 1000:.0f}")
        else:
            table.add_row(event, f"not by {result.steps_done}", "-", "-", "-")
    console.print(table)
    done = result.steps_done
    console.print(f"{done} steps in {result.seconds:.0f} s: {done / result.seconds:.1f} steps/s overall "
                  f"(plain loop: {1000 / plain:.1f} steps/s)")


if __name__ == "__main__":
    main()
