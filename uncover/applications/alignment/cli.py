"""`uncover align bias|toxic MODEL`: bias heads and unwanted directions with their effect and cost."""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from uncover.cli import load_model as _load

console = Console()
KINDS = ("bias", "toxic")


def align_command(
    kind: str = typer.Argument(..., help="bias (gender-occupation bias heads) or toxic (unwanted word directions)"),
    model: str = typer.Argument("smollm2-135m", help="bundled name, HF id, local dir or .gguf"),
    word_list: str = typer.Option("offensive", help="for toxic: offensive or negative"),
    heldout: int = typer.Option(8, help="held-out corpus windows (128 tokens) for perplexity"),
) -> None:
    """Find the components behind an unwanted behaviour, remove them, and measure effect and perplexity cost."""
    from uncover.applications.pruning.curves import split_corpus
    from uncover.errors import UncoverError

    if kind not in KINDS:
        raise UncoverError(f"align kind must be one of {', '.join(KINDS)}, not {kind!r} (lying heads are not "
                           "built yet: smollm2-135m answers true/false questions at chance even when honest)")
    m = _load(model)
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


def register(app: typer.Typer) -> None:
    app.command("align")(align_command)
