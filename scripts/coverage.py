"""Regenerate the architecture coverage table: every causal-LM type of the installed transformers.

    .venv/bin/python scripts/coverage.py            # writes docs/coverage.md (about 2-3 minutes on one core)
    .venv/bin/python scripts/coverage.py --quick    # load + parity only (about 1 minute)

Each type gets a tiny random model from its config; uncover.coverage.check says its level
(full / partial / residual / refused / skipped) and runs the checks behind it.
"""
from __future__ import annotations

import argparse
import logging
import warnings
from collections import Counter
from pathlib import Path

import torch

import transformers

from uncover.coverage import causal_lm_types, check, share_full

LEVELS = {
    "full": "full: every standard name (residual, attention q/k/v/z/pattern, MLP pre/post or MoE router, edges)",
    "partial": "partial: residual decomposition (resid_pre/mid/post, attn_out, mlp_out) + the names not listed as missing",
    "residual": "residual: hook_embed, blocks.{l}.hook_resid_pre|post, ln_final.hook_normalized",
    "refused": "refused: a clear UncoverError at load",
    "skipped": "skipped: not a decoder-only causal LM, or no tiny config",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/coverage.md"))
    parser.add_argument("--quick", action="store_true", help="load + parity only, no per-hook checks")
    parser.add_argument("--readme", type=Path, default=Path("README.md"),
                        help="README whose 'Architecture coverage' section gets the headline (not with --quick)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    rows = []
    for t in causal_lm_types():
        r = check(t, deep=not args.quick)
        rows.append(r)
        print(f"{t:28s} {r.level:9s} {'FAILED ' + '; '.join(r.failed) if r.failed else ''}", flush=True)
    full, total = share_full(rows)
    counts = Counter(r.level for r in rows)
    lines = [
        "# Architecture coverage",
        "",
        f"Measured with transformers {transformers.__version__} by `scripts/coverage.py`"
        f"{' --quick' if args.quick else ''} on tiny random models (2 layers, d_model 64); the same checks run in "
        "`tests/core/test_coverage.py`.",
        "",
        f"**{full} of {total} ({100 * full / total:.0f}%) decoder-only transformer types** (every layer has attention "
        "and no recurrent mixer beside it; not counting state-space models, hybrids, encoder-decoder, encoder-only "
        "and multimodal wrappers or types whose config does not shrink) "
        "load with full hooks and pass every check, bitwise parity included.",
        "",
        "Levels: " + "; ".join(f"{counts.get(k, 0)} {v}" for k, v in LEVELS.items()) + ".",
        "",
        "| model type | kind | level | missing / reason | checks |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        note = r.reason if r.level in ("residual", "refused", "skipped") else ", ".join(r.missing)
        checks = "" if r.level == "skipped" else ("FAILED: " + "; ".join(r.failed) if r.failed else "pass")
        lines.append(f"| {r.model_type} | {r.kind} | {r.level} | {note.replace('|', '/')} | {checks.replace('|', '/')} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{full}/{total} full; wrote {args.out}")
    if not args.quick and args.readme.exists():
        update_readme(args.readme, rows, full, total, counts, args.out)


START, END = "<!-- coverage:start (scripts/coverage.py writes this) -->", "<!-- coverage:end -->"


def update_readme(readme: Path, rows, full: int, total: int, counts: Counter, table: Path) -> None:
    """Replace the text between the coverage markers of ``readme`` with the measured headline."""
    text = readme.read_text()
    if START not in text or END not in text:
        return
    partial = sorted(r.model_type for r in rows if r.attention and r.level != "full" and r.kind == "decoder"
                     and r.level != "skipped")
    body = "\n".join([
        START,
        f"Measured on tiny random models of every causal-LM type in transformers {transformers.__version__}: "
        f"**{full} of {total} decoder-only transformer types ({100 * full / total:.0f}%) load with full hooks** "
        "(every standard name, the edge names included) and pass every check, bitwise parity with "
        "`model.hf` included. "
        f"Over all {sum(counts.values())} causal-LM types: {counts.get('full', 0)} full, {counts.get('partial', 0)} "
        f"partial (residual decomposition + most names), {counts.get('residual', 0)} residual stream only "
        f"(state-space models, hybrids, blocks whose residual update is not a sum of attention and MLP "
        f"outputs), {counts.get('refused', 0)} refused with a clear error, "
        f"{counts.get('skipped', 0)} skipped (encoder-decoder, encoder-only, multimodal wrappers, configs that "
        f"do not shrink). Transformers not full: {', '.join(partial)}. The table, type by type: "
        f"[{table.as_posix()}]({table.as_posix()}) (`scripts/coverage.py` regenerates both).",
        END,
    ])
    head, rest = text.split(START, 1)
    readme.write_text(head + body + rest.split(END, 1)[1])
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
