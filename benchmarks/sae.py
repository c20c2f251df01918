"""TopK SAE training throughput on smollm2 activations, side by side in one process.

uncover's sparse TopK step vs sparsify (eai-sparsify) vs SAELens vs a plain dense PyTorch TopK, all on the
same batches of the same activations (one middle layer's resid_post over the offline corpus), same init
(b_dec at the data mean, decoder rows unit norm), Adam with the same learning rate, k=32, 16 x d_model
latents. Reported: training-step tokens/s (median step time over alternating repeats, after a warm-up run and
excluding each run's first step), the ratio to sparsify (target >= 1.5x), and explained variance on
held-out activations after the same tokens.
Also: harvest throughput (uncover's activation store, which stops the forward at the hook) against
the plain forward pass over the same tokens.

    .venv/bin/python benchmarks/sae.py                        # batch 4096, 12 steps each
    .venv/bin/python benchmarks/sae.py --steps 30 --batch 4096 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import uncover as uc
from uncover.data.corpus import corpus_tokens
from uncover.features.sae import SAE, SAEConfig
from uncover.features.store import harvest
from uncover.features.training import SAETrainConfig, SAETrainer

warnings.filterwarnings("ignore")


def explained_variance(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(1 - (recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def run_uncover(batches, held_out, d, n_latents, k, lr, mean):
    sae = SAE(SAEConfig(d, n_latents, "topk", k=k), seed=0)
    trainer = SAETrainer(sae, SAETrainConfig(total_tokens=len(batches) * len(batches[0]), batch_size=len(batches[0]),
                                       lr=lr, warmup_steps=1, decay_fraction=0.0,
                                       dead_after_tokens=10_000_000))   # sparsify's default: no AuxK this early
    times = []
    for x in batches:
        t0 = time.perf_counter()
        trainer.train_step(x)
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        ev = explained_variance(sae(held_out), held_out)
    return times, ev


def run_sparsify(batches, held_out, d, n_latents, k, lr, mean):
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d, SparseCoderConfig(num_latents=n_latents, k=k))
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    dead = torch.zeros(n_latents, dtype=torch.bool)
    times = []
    for x in batches:
        t0 = time.perf_counter()
        out = sae(x, dead_mask=dead)
        loss = out.fvu + out.auxk_loss / 32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        ev = explained_variance(sae(held_out).sae_out, held_out)
    return times, ev


def run_saelens(batches, held_out, d, n_latents, k, lr, mean):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import TrainStepInput

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=n_latents, k=k))
    with torch.no_grad():
        sae.b_dec.copy_(mean)
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    dead = torch.zeros(n_latents, dtype=torch.bool)
    times = []
    for i, x in enumerate(batches):
        t0 = time.perf_counter()
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=dead,
                                                       n_training_steps=i, is_logging_step=False))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        ev = explained_variance(sae(held_out), held_out)
    return times, ev


def run_dense(batches, held_out, d, n_latents, k, lr, mean):
    """The textbook TopK SAE: dense encoder, scatter into a dense code, dense decoder, autograd."""
    gen = torch.Generator().manual_seed(0)
    W_dec = torch.randn(n_latents, d, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = [torch.nn.Parameter(W_dec.T.clone()), torch.nn.Parameter(torch.zeros(n_latents)),
              torch.nn.Parameter(W_dec), torch.nn.Parameter(mean.clone())]
    W_enc, b_enc, W_dec, b_dec = params
    opt = torch.optim.Adam(params, lr=lr)

    def forward(x):
        pre = (x - b_dec) @ W_enc + b_enc
        v, i = pre.topk(k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, i, v.relu()) @ W_dec + b_dec

    times = []
    for x in batches:
        t0 = time.perf_counter()
        loss = (forward(x) - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True)
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        ev = explained_variance(forward(held_out), held_out)
    return times, ev


RUNNERS = {"uncover": run_uncover, "sparsify": run_sparsify, "saelens": run_saelens, "dense torch": run_dense}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--expansion", type=int, default=16)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating timed runs per implementation")
    ap.add_argument("--only", default="", help="comma-separated subset of " + ",".join(RUNNERS))
    ap.add_argument("--acts-cache", default="", help="safetensors file to reuse harvested activations from")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = uc.load(args.model)
    layer = model.cfg.n_layers // 2
    hook = f"blocks.{layer}.hook_resid_post"
    seq_len = 128
    n_tokens = (args.steps + 1) * args.batch
    tokens = corpus_tokens(model, -(-n_tokens // seq_len), seq_len, seed=0)

    from pathlib import Path

    from safetensors.torch import load_file, save_file

    cache = Path(args.acts_cache) if args.acts_cache else None
    if cache and cache.exists() and len(load_file(str(cache))["acts"]) >= n_tokens:
        acts = load_file(str(cache))["acts"][:n_tokens]
        print(f"activations reused from {cache} (harvest not timed)")
    else:
        acts = time_harvest(model, hook, tokens, layer)
        if cache:
            save_file({"acts": acts}, str(cache))
    run(args, acts)


def time_harvest(model, hook: str, tokens: torch.Tensor, layer: int) -> torch.Tensor:
    """Harvest vs plain forward over the same tokens; returns the activations."""
    chunk = 16
    t0 = time.perf_counter()
    acts = torch.cat([harvest(model, [hook], tokens[s:s + chunk])[hook] for s in range(0, len(tokens), chunk)])
    t_harvest = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, len(tokens), chunk):
            model(tokens[s:s + chunk])
    t_forward = time.perf_counter() - t0
    n = tokens.numel()
    print(f"harvest {hook}: {n / t_harvest:,.0f} tok/s; plain forward: {n / t_forward:,.0f} tok/s "
          f"(harvest / forward throughput = {t_forward / t_harvest:.2f}x; the store stops at layer {layer})")
    return acts


def run(args, acts: torch.Tensor) -> None:
    acts = acts[torch.randperm(len(acts), generator=torch.Generator().manual_seed(0))]
    held_out = acts[args.steps * args.batch:][: args.batch]
    batches = list(acts[: args.steps * args.batch].split(args.batch))
    mean = torch.cat(batches).mean(0)
    d, n_latents = acts.shape[1], args.expansion * acts.shape[1]
    print(f"{len(batches)} steps x {args.batch} tokens, d={d}, latents={n_latents}, k={args.k}, "
          f"threads={torch.get_num_threads()}")
    names = args.only.split(",") if args.only else list(RUNNERS)
    for name in names:             # warm-up: first-touch allocations, thread pools, lazy imports
        RUNNERS[name](batches[:2], held_out, d, n_latents, args.k, args.lr, mean)
    step_times: dict[str, list[float]] = {n: [] for n in names}
    evs = {}
    for r in range(args.repeats):  # alternate implementations so load drifts hit all of them alike
        for name in names:
            torch.manual_seed(0)
            times, evs[name] = RUNNERS[name](batches, held_out, d, n_latents, args.k, args.lr, mean)
            step_times[name] += times[1:]
            print(f"  repeat {r}: {name:12s} {args.batch / statistics.median(times[1:]):9,.0f} tok/s   "
                  f"EV {evs[name]:.4f}", flush=True)
    rows = {n: (args.batch / statistics.median(step_times[n]), evs[n]) for n in names}
    ref = rows.get("sparsify", (None,))[0]
    print(f"\n{'implementation':14s} {'tokens/s':>10s} {'vs sparsify':>12s} {'EV after':>9s}")
    for name, (tps, ev) in rows.items():
        ratio = f"{tps / ref:.2f}x" if ref else "-"
        print(f"{name:14s} {tps:10,.0f} {ratio:>12s} {ev:9.4f}")


if __name__ == "__main__":
    main()
