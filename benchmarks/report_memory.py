"""Peak resident memory and time of each report section, per model, beside the vocabulary and weight sizes.

Each section runs alone in a fresh process (``uncover report MODEL --only KEY --no-cache``), so its peak
RSS is its own (model weights included); ``whole report`` runs every section in one process, as
``make report`` does. Memory that scales with the vocabulary shows as a section whose peak grows with
d_vocab rather than with the weights.

    .venv/bin/python benchmarks/report_memory.py                          # both bundled models, every section
    .venv/bin/python benchmarks/report_memory.py --models smollm2-135m --sections overview components
    .venv/bin/python benchmarks/report_memory.py --whole                  # also the whole report in one process
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNCOVER = [sys.executable, "-m", "uncover.cli"]
SIZES = ("import json, uncover as uc; m = uc.load({name!r}); "
         "print(json.dumps({{'d_vocab': m.cfg.d_vocab, 'weights_bytes': sum(p.numel() * p.element_size() "
         "for p in m.hf.parameters())}}))")


def measured(cmd: list[str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS in GB, exit code, last output line) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return time.perf_counter() - t0, usage.ru_maxrss / 1e6, proc.returncode, last  # ru_maxrss: kB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--sections", nargs="+", default=None, help="section keys (default: every section)")
    ap.add_argument("--whole", action="store_true", help="also run the whole report in one process")
    args = ap.parse_args()
    from uncover.report.build import load_sections

    keys = args.sections or [s.key for s in load_sections()]
    rows = []
    for name in args.models:
        sizes = json.loads(subprocess.run([sys.executable, "-c", SIZES.format(name=name)], capture_output=True,
                                          text=True, check=True).stdout.strip().splitlines()[-1])
        load_s, load_gb, load_code, _ = measured([sys.executable, "-c", f"import uncover as uc; uc.load({name!r})"])
        rows.append((name, "load only", load_s, load_gb, load_code, sizes))
        runs = [(k, ["--only", k]) for k in keys] + ([("whole report", [])] if args.whole else [])
        for key, only in runs:
            with tempfile.TemporaryDirectory() as out:
                seconds, gb, code, last = measured([*UNCOVER, "report", name, "--out", str(Path(out)), "--no-cache", *only])
            rows.append((name, key, seconds, gb, code, sizes))
            print(f"{name:14s} {key:18s} {seconds:7.1f} s {gb:6.2f} GB" + ("" if code == 0 else f"  FAILED: {last}"),
                  flush=True)
    print("\n| model | d_vocab | weights (GB) | section | seconds | peak RSS (GB) | peak / weights |")
    print("|---|---|---|---|---|---|---|")
    for name, key, seconds, gb, code, sizes in rows:
        w = sizes["weights_bytes"] / 1e9
        status = "" if code == 0 else " (failed)"
        print(f"| {name} | {sizes['d_vocab']:,} | {w:.2f} | {key}{status} | {seconds:.1f} | {gb:.2f} | {gb / w:.1f}x |")


if __name__ == "__main__":
    main()
