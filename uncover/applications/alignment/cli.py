"""`uncover align bias|toxic|lying MODEL`: bias heads, unwanted directions and lying heads with their effect and cost."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from uncover.cli import load_model as _load

console = Console()
KINDS = ("bias", "toxic", "lying")


def align_command(
    kind: str = typer.Argument(..., help="bias (gender-occupation bias heads), toxic (unwanted word directions) or "
                                         "lying (heads that turn honest answers into lies)"),
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    word_list: str = typer.Option("offensive", help="for toxic: offensive or negative"),
    heldout: int = typer.Option(8, help="held-out corpus windows (128 tokens) for perplexity"),
    n: int = typer.Option(24, help="for lying: true/false statements per condition (even)"),
    candidates: int = typer.Option(12, help="for lying: heads activation-patched alone (top by attribution; 0: all)"),
    out: str = typer.Option("", help="for lying: save the result in this folder"),
) -> None:
    """Find the components behind an unwanted behaviour, remove them, and measure effect and perplexity cost."""
    from uncover.applications.pruning.curves import split_corpus
    from uncover.errors import UncoverError

    if kind not in KINDS:
        raise UncoverError(f"align kind must be one of {', '.join(KINDS)}, not {kind!r}")
    m = _load(model)
    if kind == "lying":
        _lying(m, n, candidates or None, out)
        return
    _, held = split_corpus(m, 1, heldout, 128)
    if kind == "bias":
        from uncover.applications.alignment.bias import bias_heads

        with console.status("ranking heads by their bias gradient and masking them ..."):
            r = bias_heads(m, held, counts=(1, 2, 4, 8, 16, 32))
        table = Table("heads masked", "bias on held-out prompts (nats)", "stereotype agreement", "perplexity")
        for k, b, a, p in zip(r.counts, r.bias_test, r.agreement_test, r.perplexity):
            table.add_row(str(k), f"{b:+.3f}", f"{a:.0%}", f"{p:.2f}")
        console.print(table)
        console.print("top heads: " + ", ".join(f"L{l}H{h}" for l, h in r.order[:10]))
        k = r.crossing()
        console.print(f"bias halved with < 10% perplexity rise at {k} heads" if k is not None else
                      "no head count tried halves the bias with < 10% perplexity rise (see the table)")
        return
    from uncover.applications.alignment.toxic import unwanted_directions

    with console.status(f"finding value vectors and a probe direction for '{word_list}' ..."):
        r = unwanted_directions(m, word_list, held)
    if r.skipped:
        console.print(f"[yellow]skipped {len(r.skipped)} words that are not single tokens:[/yellow] "
                      + ", ".join(repr(w) for w in r.skipped))
    console.print(f"probe accuracy on held-out contrast pairs {r.probe.test_accuracy:.0%}; top value vectors: "
                  + "; ".join(f"L{v['layer']}N{v['neuron']} {''.join(v['tokens'][:4])!r}" for v in r.top_vectors[:4]))
    table = Table("intervention", "strength", "P(words) neutral", "P(words) provoking", "perplexity")
    for row in r.rows:
        table.add_row(row["kind"], str(row["strength"]), f"{row['neutral']:.4f}", f"{row['provoking']:.4f}",
                      f"{row['perplexity']:.2f}")
    console.print(table)


def _lying(m, n: int, candidates: int | None, out: str) -> None:
    from uncover.applications.alignment.lying import lying_heads
    from uncover.applications.report import lying_findings
    from uncover.core.results import RichProgress

    r = lying_heads(m, n=n, candidates=candidates, progress=RichProgress(transient=True))
    table = Table("condition", "tokens", "honest acc", "lying acc", "honest raw", "lying raw", "follows")
    for row in r.conditions:
        table.add_row(row["name"], str(row["tokens"]), f"{row['honest_acc']:.0%}", f"{row['lying_acc']:.0%}",
                      f"{row['honest_raw_acc']:.0%}", f"{row['lying_raw_acc']:.0%}", "yes" if row["follows"] else "no")
    console.print(table)
    sets = Table("heads patched (best first)", "heads", "accuracy", "normalised effect")
    for k, a, e in zip(r.set_sizes, r.set_accuracy, r.set_effect):
        sets.add_row(str(k), ", ".join(f"L{l}H{h}" for l, h in r.order[:k]), f"{a:.0%}", f"{e:+.2f}")
    sets.add_row("all", "every head", f"{r.all_heads_accuracy:.0%}", f"{r.all_heads_effect:+.2f}")
    console.print(sets)
    for sentence in lying_findings(r):
        console.print("- " + sentence)
    if out:
        console.print(f"saved to {r.save(out)}")


def register(app: typer.Typer) -> None:
    app.command("align")(align_command)
