"""The `uncover` command line: one sub-command per capability. Errors print as one clear line."""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import types
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Uncover how a language model works.")
console = Console()

# Each area adds its commands with register(app); listed in survey order.
AREAS = [
    "uncover.components.cli",
    "uncover.components.circuits.cli",
    "uncover.features.cli",
    "uncover.representations.cli",
    "uncover.representations.world.cli",
    "uncover.dynamics.cli",
    "uncover.applications.editing.cli",
    "uncover.applications.pruning.cli",
    "uncover.applications.alignment.cli",
    "uncover.applications.cli",
]


def load_model(name: str):
    """Load with a spinner (the first load of a bundled GGUF model dequantises it once)."""
    import uncover as uc

    with console.status(f"loading {name} ..."):
        return uc.load(name)


@app.command()
def models() -> None:
    """Bundled models and whether they are installed."""
    from uncover.core.zoo import BUNDLED, cache_root

    table = Table("name", "installed", "description", "install with")
    for b in BUNDLED.values():
        table.add_row(b.name, "yes" if b.installed() else "no", b.description, b.pip)
    console.print(table)
    console.print(f"dequantised weights are cached under {cache_root()} (set UNCOVER_CACHE to move it)")


@app.command()
def run(
    model: str = typer.Argument(..., help="bundled name, HF id, local dir or .gguf"),
    prompt: str = typer.Argument(..., help="text to continue"),
    top: int = typer.Option(10, help="how many next tokens to show"),
) -> None:
    """Top next tokens with their probabilities."""
    import torch

    m = load_model(model)
    with torch.no_grad():
        probs = m(m.to_tokens(prompt))[0, -1].softmax(-1)
    values, ids = probs.topk(top)
    table = Table("rank", "token", "probability")
    for i, (p, t) in enumerate(zip(values.tolist(), ids.tolist()), 1):
        table.add_row(str(i), repr(m.tokenizer.decode([t])), f"{p:.4f}")
    console.print(table)


@app.command()
def hooks(
    model: str = typer.Argument("smollm2-135m"),
    pattern: str = typer.Option("*", help="glob over hook names, e.g. 'blocks.0.*'"),
) -> None:
    """Standard hook names of a model with their shapes on a 4-token prompt (batch 1)."""
    m = load_model(model)
    names = m.resolve_names(pattern, include_patterns=True) if pattern != "*" else m.hook_names()
    tokens = m.to_tokens(["one two three four"]) if m.tokenizer else [[5, 6, 7, 8]]
    _, cache = m.run_with_cache(tokens, names=names)
    table = Table("hook name", "shape")
    for n in names:
        table.add_row(n, str(list(cache[n].shape)))
    console.print(table)
    console.print(f"{len(names)} names; attention patterns switch that forward to eager attention")


@app.command()
def report(
    model: str = typer.Argument("smollm2-135m"),
    out: Path = typer.Option(Path("report"), help="output folder (index.html is written there)"),
    full: bool = typer.Option(False, help="full-size reproductions instead of the quick default run"),
    only: Optional[list[str]] = typer.Option(None, help="only these section keys (repeatable)"),
    no_cache: bool = typer.Option(False, help="recompute every section"),
    compare: Optional[list[str]] = typer.Option(
        None, help="another model to compare with MODEL on relative depth (repeatable): writes OUT/compare.html"),
    max_memory: Optional[float] = typer.Option(
        None, help="memory budget in GB: chunked work sizes itself to it; each section states its peak against it"),
) -> None:
    """The main job: a self-contained HTML report of how MODEL works (exit code 1 if a section failed)."""
    import re

    from uncover.report.build import build_report

    built = build_report(model, out, full=full, only=only, use_cache=not no_cache, max_memory=max_memory)
    failed = [(model, *f) for f in built.failed]
    console.print(f"report written to {built.path}")
    if compare:
        from uncover.report.compare import COMPARED, write_compare

        others = []
        for other in compare:
            folder = out / "compare" / re.sub(r"[^A-Za-z0-9_.-]+", "_", other).strip("_.")
            others.append(build_report(other, folder, full=full, only=COMPARED, use_cache=not no_cache,
                                       max_memory=max_memory))
            failed += [(other, *f) for f in others[-1].failed]
        console.print(f"comparison written to {write_compare([built, *others], out / 'compare.html')}")
    if failed:
        console.print(f"{len(failed)} section(s) failed:", highlight=False)
        for name, key, title, error in failed:
            console.print(f"  [red]failed[/red] {name}: {key} ({title}): {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def serve(
    model: str = typer.Argument("smollm2-135m"),
    sae: Optional[list[Path]] = typer.Option(None, help="SAE folder in SAELens format, or a folder of them (repeatable)"),
    direction: Optional[list[Path]] = typer.Option(None, help="saved Direction folder(s) for steering (repeatable)"),
    circuit: Optional[list[Path]] = typer.Option(None, help="circuit graph .json file or folder (repeatable)"),
    corpus: Optional[Path] = typer.Option(None, help="text corpus for feature pages (default: the offline corpus)"),
    port: int = typer.Option(8765, help="port (0: any free port)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback exposes the model"),
    allow_host: Optional[list[str]] = typer.Option(None, help="extra Host header names to accept (repeatable)"),
    max_tokens: Optional[int] = typer.Option(None, help="longest prompt in tokens (default: fits the lens in ~1 GiB)"),
) -> None:
    """A local web explorer of MODEL's internals; prints a URL with a per-launch token."""
    from uncover.explorer.server import serve as run_server
    from uncover.explorer.session import Explorer, Limits

    m = load_model(model)
    with console.status("preparing the explorer ..."):
        explorer = Explorer(m, sae or [], direction or [], circuit or [], corpus, Limits.for_model(m, max_tokens))
        explorer.run("Hello")  # warm up the first forward
    run_server(explorer, host, port, allow_host or [], echo=lambda s: console.print(s, highlight=False, soft_wrap=True))


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` has not run yet: it runs on the first lookup of a name the module does
    not have. ``__path__``, ``__file__`` and ``__spec__`` are already set, so importing a submodule or
    inspecting the module (``inspect.getmodule`` reads ``__file__`` of every module in ``sys.modules``
    while torch imports) does not run it; ``importlib.util.LazyLoader`` would, in the middle of another
    import, and could close an import cycle."""

    def __getattr__(self, name: str):
        self.__class__ = types.ModuleType
        try:
            self.__spec__.loader.exec_module(self)
        except BaseException:
            self.__class__ = _DeferredPackage
            raise
        return getattr(self, name)


def _import_area(module_name: str):
    """Import an area's CLI module without running the package ``__init__`` files above it yet.

    An area package's ``__init__`` imports its techniques (torch, transformers, ...), which listing or
    parsing commands never needs. Each enclosing package that is not imported yet is put in place as a
    :class:`_DeferredPackage`, which runs its ``__init__`` when one of its names is first used, so
    ``uncover --help`` stays fast and everything else behaves as after a normal import.
    """
    if module_name in sys.modules:
        return sys.modules[module_name]
    parts = module_name.split(".")
    parent = importlib.import_module(parts[0])
    search = parent.__path__
    for i in range(1, len(parts)):
        name = ".".join(parts[: i + 1])
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
            if spec is None:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            if i < len(parts) - 1:  # an enclosing package: its __init__ runs on first use
                module.__class__ = _DeferredPackage
            else:
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        search = module.__dict__.get("__path__")
        setattr(parent, parts[i], module)
        parent = module
    return parent


def _register_areas() -> None:
    for module_name in AREAS:
        try:
            module = _import_area(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # area not built in this checkout
                continue
            raise
        module.register(app)


def main() -> None:
    from uncover.errors import UncoverError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    _register_areas()
    try:
        code = app(standalone_mode=False)  # without standalone mode click returns typer.Exit's code
    except UncoverError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except Exception as e:  # click usage errors and anything unexpected: one line, no traceback
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        console.print(f"[red]error:[/red] {type(e).__name__}: {e}", highlight=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
