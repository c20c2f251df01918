"""Hook and cache overhead on smollm2-135m, side by side in one process (CPU, batch 4 x 128).

Compares, with interleaved repeats and medians:
  plain HF forward | uncover run_with_cache (every standard name except patterns)
  | TransformerLens TransformerBridge.run_with_cache | nnsight saving the same sites.
Also: the bytes uncover's cache holds vs the sum of the requested tensors, and cold (GGUF) / warm loads.

Run: .venv/bin/python benchmarks/hooks.py [--repeats 5]   (peers: make bench installs them)
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time

import torch

import uncover as uc
from uncover.core import loading
from uncover.core.zoo import BUNDLED


def unique_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold GGUF load (about 30 s)")
    args = ap.parse_args()
    torch.manual_seed(0)

    rows = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as d:
            old = os.environ.get("UNCOVER_CACHE")
            os.environ["UNCOVER_CACHE"] = d
            cold = timed(lambda: uc.load("smollm2-135m"))
            if old is None:
                del os.environ["UNCOVER_CACHE"]
            else:
                os.environ["UNCOVER_CACHE"] = old
        rows.append(("load smollm2, cold (dequantise GGUF + write cache)", cold, None))
    uc.load("smollm2-135m")  # make sure the shared cache exists
    warm = statistics.median(timed(lambda: uc.load("smollm2-135m")) for _ in range(3))
    rows.append(("load smollm2, warm (verified safetensors cache)", warm, None))

    model = uc.load("smollm2-135m")
    hf = model.hf
    tokens = torch.randint(100, model.cfg.d_vocab, (4, 128))
    names = model.resolve_names(None)

    methods = {}

    def plain():
        with torch.no_grad():
            hf(input_ids=tokens, use_cache=False)

    methods["plain HF forward"] = plain
    caches = {}

    def uncover_cache():
        caches["uncover"] = model.run_with_cache(tokens)[1]

    methods["uncover run_with_cache (all names)"] = uncover_cache

    try:
        from transformer_lens.model_bridge import TransformerBridge

        folder = loading.dequantised_dir(BUNDLED["smollm2-135m"].gguf_path(loading.cache_root()))
        bridge = TransformerBridge.boot_transformers(str(folder), tokenizer=model.tokenizer)

        def tl():
            with torch.no_grad():
                caches["tl"] = bridge.run_with_cache(tokens)[1]

        methods["TransformerLens bridge run_with_cache"] = tl
    except Exception as e:  # noqa: BLE001  (peer not installed or cannot boot offline)
        print(f"TransformerLens bridge skipped: {type(e).__name__}: {e}")

    try:
        from nnsight import LanguageModel  # deprecated alias in 0.8, still the documented wrapper of a loaded model

        lm = LanguageModel(hf, tokenizer=model.tokenizer)

        def nn_sites():
            saved = []
            with torch.no_grad(), lm.trace(tokens):
                body = lm.model
                saved.append(body.embed_tokens.output.save())
                for layer in body.layers:
                    a, m = layer.self_attn, layer.mlp
                    # nnsight needs the sites in execution order
                    saved += [layer.input.save(), a.q_proj.output.save(), a.k_proj.output.save(),
                              a.v_proj.output.save(), a.o_proj.input.save(), a.output[0].save(),
                              layer.post_attention_layernorm.input.save(), m.gate_proj.output.save(),
                              m.down_proj.input.save(), m.output.save(), layer.output.save()]
                saved.append(body.norm.output.save())
            caches["nnsight"] = saved

        methods["nnsight .save() of the same sites"] = nn_sites
    except Exception as e:  # noqa: BLE001
        print(f"nnsight skipped: {type(e).__name__}: {e}")

    times = {k: [] for k in methods}
    for fn in methods.values():  # warm-up
        fn()
    order = list(methods)
    for r in range(args.repeats):
        # Interleaved, so drift hits every method alike, and rotated, so no method always runs right after
        # the one whose freed memory it would reuse. Every method's previous result is released before
        # each timed call: fresh pages are slow on this VM, and which method got them would otherwise
        # depend on the order, not on the method.
        for k in order[r % len(order):] + order[: r % len(order)]:
            caches.clear()
            gc.collect()
            times[k].append(timed(methods[k]))
    for fn in methods.values():  # once more, untimed, to measure what each cache holds
        fn()

    base = statistics.median(times["plain HF forward"])
    from uncover.core.memory import tune_allocator

    print(f"\nsmollm2-135m, batch 4 x 128, CPU threads {torch.get_num_threads()}, {args.repeats} interleaved repeats "
          f"(median); glibc malloc tuned by uncover.core.memory: {tune_allocator()}")
    print(f"{'what':58s} {'seconds':>9s} {'vs plain':>9s}")
    for label, t, _ in rows:
        print(f"{label:58s} {t:9.2f} {'':>9s}")
    for k, ts in times.items():
        m = statistics.median(ts)
        print(f"{k:58s} {m:9.3f} {m / base:8.2f}x")

    c = caches["uncover"]
    requested = sum(t.numel() * t.element_size() for t in c.data.values())
    held = unique_bytes(c.data.values())
    print(f"\nuncover cache: {len(c)} names, requested tensors {requested / 2**20:.0f} MiB, "
          f"storage held {held / 2**20:.0f} MiB (ratio {held / requested:.3f})")
    if "tl" in caches:
        tl_bytes = unique_bytes(v for v in caches["tl"].cache_dict.values() if isinstance(v, torch.Tensor))
        print(f"TransformerLens bridge cache: {len(caches['tl'].cache_dict)} names, {tl_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
