"""`uncover wrappers`: the fine-tuning wrapper experiment (Jain et al. 2023) on a toy counting transformer
(the applications area's own commands; editing, pruning and alignment register theirs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def wrappers_command(
    steps: Optional[int] = typer.Option(None, help="pre-training steps (default: the config's)"),
    finetune_steps: Optional[int] = typer.Option(None, help="fine-tuning steps (default: the config's)"),
    seed: int = typer.Option(0, help="seed of the initial weights, data and batches"),
    quick: bool = typer.Option(False, help="the small test-size model (about 15 s) instead of the default"),
    out: Optional[Path] = typer.Option(None, help="folder to save the WrapperResult in"),
    threads: int = typer.Option(1, help="torch threads (1 is fastest for these small models)"),
) -> None:
    """Pre-train a toy transformer to count a token, fine-tune it to count another, then probe, prune and
    reverse-fine-tune it; prints each measured claim."""
    import dataclasses

    import torch

    from uncover.applications.report import wrapper_findings
    from uncover.applications.wrappers import WrapperConfig, run_wrappers, test_config
    from uncover.core.results import RichProgress
    from uncover.errors import UncoverError

    if threads < 1:
        raise UncoverError(f"--threads must be at least 1, got {threads}")
    cfg = test_config(seed) if quick else WrapperConfig(seed=seed)
    changes = {k: v for k, v in (("pretrain_steps", steps), ("finetune_steps", finetune_steps)) if v is not None}
    cfg = dataclasses.replace(cfg, **changes)  # re-validates
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = run_wrappers(cfg, progress=RichProgress(transient=True))
    finally:
        torch.set_num_threads(before)
    table = Table("measure", "value")
    table.add_row("capability accuracy: pre-trained / fine-tuned / untrained",
                  f"{result.pretrained_acc:.1%} / {result.finetuned_acc:.1%} / {result.random_acc:.1%}")
    table.add_row("fine-tuning task accuracy after fine-tuning", f"{result.finetuned_finetune_acc:.1%}")
    table.add_row("probe accuracy (best layer): fine-tuned / random init",
                  f"{result.probe_finetuned:.1%} / {result.probe_random:.1%}")
    ranking, k, share = result.best_restore()
    table.add_row("best pruning: units (ranking) -> share of lost accuracy restored",
                  f"{k} of {result.n_units} ({ranking}) -> {share:.0%}" if ranking else "n/a")
    table.add_row(f"steps to {cfg.revive_acc:.0%}: reverse fine-tuning / from scratch",
                  f"{result.revive_steps} / {result.scratch_steps}")
    console.print(table)
    for sentence in wrapper_findings(result):
        console.print(f"- {sentence}", highlight=False, soft_wrap=True)
    if out is not None:
        console.print(f"saved to {result.save(out)}")


def register(app: typer.Typer) -> None:
    app.command("wrappers")(wrappers_command)
