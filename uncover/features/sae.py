"""Sparse autoencoders and transcoders: ReLU + L1, TopK (+ AuxK), BatchTopK and JumpReLU.

An SAE reads activations ``x`` [..., d_in] at ``hook_name`` and writes ``d_sae`` latents
``f = σ(pre)``, ``pre = (x - b_dec) W_enc + b_enc``, then reconstructs ``x̂ = f W_dec + b_dec``.
A *transcoder* reads ``hook_name`` but predicts the activation at ``hook_name_out`` (``d_out`` wide),
so it never subtracts ``b_dec`` from its input. Weights follow SAELens' layout and names
(``W_enc`` [d_in, d_sae], ``W_dec`` [d_sae, d_out], ``b_enc``, ``b_dec``, ``threshold``), so
``uncover.features.saelens`` only renames config keys.

TopK training never materialises a dense gradient: the encoder forward is one dense matmul (in
bfloat16, used only to *choose* the k latents), the chosen pre-activations are recomputed exactly in
float32 as sampled products (``torch.sparse.sampled_addmm``), the decoder is a sparse [batch, d_sae]
x dense product, and both weight gradients are sparse-transposed products that touch only the chosen
rows. These sparse kernels are CPU ones; on other devices (``_use_sparse``) the same functions run as
dense products (one matmul, a gather, a scatter), which is what a GPU does fastest at SAE widths.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uncover.errors import UncoverError

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")


@dataclass
class SAEConfig:
    """Shape, architecture and sparsity settings of one SAE or transcoder.

    k: active latents per token (topk, batchtopk: per token on average over the batch).
    l1_coefficient: ReLU SAEs, weight of Σ_i f_i ||W_dec,i||.
    l0_coefficient: JumpReLU, weight of the (straight-through) L0 penalty.
    jumprelu_bandwidth: JumpReLU's straight-through kernel width, in activation units.
    auxk_coefficient / auxk_k: TopK's auxiliary loss on dead latents (Gao et al. 2024), k_aux latents.
    d_out / hook_name_out: set both for a transcoder (hook_name -> hook_name_out).
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    k: int = 32
    l1_coefficient: float = 5.0
    l0_coefficient: float = 1.0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.05
    auxk_coefficient: float = 1 / 32
    auxk_k: int | None = None
    d_out: int | None = None
    hook_name: str = ""
    hook_name_out: str | None = None
    model_name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise UncoverError(f"unknown SAE architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.d_in < 1 or self.d_sae < 1:
            raise UncoverError(f"d_in and d_sae must be positive, got {self.d_in}, {self.d_sae}")
        if self.architecture in ("topk", "batchtopk") and not 1 <= self.k <= self.d_sae:
            raise UncoverError(f"k must be between 1 and d_sae={self.d_sae}, got {self.k}")
        if self.d_out is None:
            self.d_out = self.d_in
        if self.auxk_k is None:
            self.auxk_k = min(max(self.d_in // 2, 1), self.d_sae)

    @property
    def is_transcoder(self) -> bool:
        return self.hook_name_out is not None and self.hook_name_out != self.hook_name


class SAE(torch.nn.Module):
    """A sparse autoencoder (or transcoder); ``sae(x)`` reconstructs, ``sae.encode(x)`` gives latents."""

    def __init__(self, cfg: SAEConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(cfg.d_sae, cfg.d_out, generator=gen)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True) * (0.1 if cfg.architecture == "relu" else 1.0)
        self.W_dec = torch.nn.Parameter(W_dec)
        W_enc = W_dec.T.clone() if cfg.d_out == cfg.d_in else torch.randn(cfg.d_in, cfg.d_sae, generator=gen) / cfg.d_in ** 0.5
        self.W_enc = torch.nn.Parameter(W_enc.contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_out))
        if cfg.architecture == "jumprelu":
            self.log_threshold = torch.nn.Parameter(torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold)).log())
        elif cfg.architecture == "batchtopk":
            self.register_buffer("batch_threshold", torch.tensor(-1.0))   # < 0 until estimated in training

    # ----- inference ---------------------------------------------------------------------------------
    @property
    def threshold(self) -> torch.Tensor:
        """Per-latent activation threshold [d_sae] (JumpReLU; BatchTopK's global estimate); zeros otherwise."""
        if self.cfg.architecture == "jumprelu":
            return self.log_threshold.exp()
        if self.cfg.architecture == "batchtopk":
            return self.batch_threshold.clamp_min(0).expand(self.cfg.d_sae)
        return self.b_enc.new_zeros(self.cfg.d_sae)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.cfg.is_transcoder else x - self.b_dec

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations [..., d_sae]."""
        return self._input(x) @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations [..., d_sae] (dense tensor, mostly zeros)."""
        pre = self.pre_acts(x)
        arch = self.cfg.architecture
        if arch == "relu":
            return torch.relu(pre)
        if arch == "topk":
            values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        return torch.relu(pre) * (pre > self.threshold)           # jumprelu, batchtopk at inference

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_out] from latents [..., d_sae]."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ----- training ----------------------------------------------------------------------------------
    def training_loss(
        self, x: torch.Tensor, target: torch.Tensor | None = None, dead: torch.Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Loss terms on a batch x [batch, d_in] (target [batch, d_out] for transcoders; defaults to x).

        dead: bool [d_sae] latents that have not fired recently (for TopK's AuxK). Returns a dict with
        ``loss`` (to minimise), ``mse`` (Σ over d, mean over batch), ``acts_count`` [d_sae] firing counts
        and ``l0`` (mean active latents per token). sparsity_scale multiplies the L1 / L0 coefficient.
        """
        target = x if target is None else target
        arch = self.cfg.architecture
        if arch == "topk":
            return self._topk_loss(x, target, dead)
        pre = self.pre_acts(x)
        if arch == "relu":
            acts = torch.relu(pre)
            recon = self.decode(acts)
            mse = (recon - target).pow(2).sum(-1).mean()
            sparsity = (acts * self.W_dec.norm(dim=1)).sum(-1).mean()
            loss = mse + sparsity_scale * self.cfg.l1_coefficient * sparsity
        elif arch == "jumprelu":
            theta = self.log_threshold.exp()
            acts = _JumpReLU.apply(pre, theta, self.cfg.jumprelu_bandwidth)
            recon = self.decode(acts)
            mse = (recon - target).pow(2).sum(-1).mean()
            sparsity = _Step.apply(pre, theta, self.cfg.jumprelu_bandwidth).sum(-1).mean()
            loss = mse + sparsity_scale * self.cfg.l0_coefficient * sparsity
        else:  # batchtopk: the batch's k * batch largest activations survive
            acts = torch.relu(pre)
            flat = acts.flatten()
            n_keep = min(self.cfg.k * x.shape[0], flat.numel())
            kept = flat.topk(n_keep, sorted=False)
            acts = torch.zeros_like(flat).scatter(0, kept.indices, kept.values).view_as(acts)
            with torch.no_grad():
                low = kept.values.min().clamp_min(0)
                est = self.batch_threshold
                self.batch_threshold.copy_(low if est < 0 else 0.99 * est + 0.01 * low)
            recon = self.decode(acts)
            mse = (recon - target).pow(2).sum(-1).mean()
            loss = mse + self._auxk_loss(pre, target - recon.detach(), dead)
        active = acts > 0
        return {"loss": loss, "mse": mse.detach(), "acts_count": active.sum(0), "l0": active.sum(-1).float().mean()}

    def _topk_loss(self, x, target, dead):
        k = self.cfg.k
        shift = None if self.cfg.is_transcoder else self.b_dec
        with torch.no_grad():   # choose the k latents with a dense bf16 matmul (only the choice uses it)
            xin = self._input(x).to(torch.bfloat16)
            pre = torch.addmm(self.b_enc.to(torch.bfloat16), xin, self.W_enc.to(torch.bfloat16))
            indices = pre.topk(k, dim=-1, sorted=False).indices
        values = torch.relu(sparse_pre_acts(x, shift, self.W_enc, self.b_enc, indices))
        recon = sparse_decode(values, indices, self.W_dec) + self.b_dec
        mse = (recon - target).pow(2).sum(-1).mean()
        loss = mse
        if dead is not None and dead.any() and self.cfg.auxk_coefficient > 0:
            loss = loss + self._auxk_loss(pre, target - recon.detach(), dead, (x, shift))
        counts = torch.zeros(self.cfg.d_sae, dtype=torch.long, device=indices.device).index_add_(
            0, indices.flatten(), (values > 0).flatten().long())
        return {"loss": loss, "mse": mse.detach(), "acts_count": counts, "l0": (values > 0).sum(-1).float().mean()}

    def _auxk_loss(self, pre, residual, dead, sparse_input=None):
        """AuxK: reconstruct the residual error from the k_aux largest *dead* latents, normalised by its variance."""
        if dead is None or not dead.any() or self.cfg.auxk_coefficient <= 0:
            return pre.new_zeros(())
        k_aux = min(self.cfg.auxk_k, int(dead.sum()))
        with torch.no_grad():
            indices = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices
        if sparse_input is None:
            values = torch.relu(pre.gather(-1, indices))
        else:
            values = torch.relu(sparse_pre_acts(*sparse_input, self.W_enc, self.b_enc, indices))
        aux_recon = sparse_decode(values, indices, self.W_dec)
        err = (aux_recon - residual).pow(2).sum(-1).mean()
        scale = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
        return self.cfg.auxk_coefficient * torch.nan_to_num(err / scale)

    @torch.no_grad()
    def set_decoder_norm_to_unit(self) -> None:
        """Renormalise decoder rows to unit norm (TopK/BatchTopK training keeps them there)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Drop the gradient component along each decoder row, so steps only rotate unit rows."""
        if self.W_dec.grad is None:
            return
        unit = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.W_dec.grad -= (self.W_dec.grad * unit).sum(1, keepdim=True) * unit

    # ----- saving ------------------------------------------------------------------------------------
    def state_for_disk(self) -> dict[str, torch.Tensor]:
        """SAELens-named weights: W_enc, W_dec, b_enc, b_dec (+ threshold for JumpReLU / BatchTopK)."""
        out = {n: getattr(self, n).detach().contiguous() for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
        if self.cfg.architecture in ("jumprelu", "batchtopk"):
            out["threshold"] = self.threshold.detach().contiguous().clone()
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` (the SAELens layout) into folder ``path``."""
        from uncover.features.saelens import save_saelens

        return save_saelens(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "SAE":
        """Load an SAE saved by uncover or by SAELens (``cfg.json`` + ``sae_weights.safetensors``)."""
        from uncover.features.saelens import load_saelens

        return load_saelens(path)


def sparse_pre_acts(
    x: torch.Tensor, shift: torch.Tensor | None, W_enc: torch.Tensor, b_enc: torch.Tensor, indices: torch.Tensor
) -> torch.Tensor:
    """Exact pre-activations of the chosen latents only: [batch, k] = (x[b] - shift) · W_enc[:, idx[b, j]] + b_enc.

    Equals ``((x - shift) @ W_enc + b_enc).gather(-1, indices)`` without the dense product; the backward
    touches only the chosen encoder columns. ``x`` gets no gradient (it is data); ``shift`` may be None.
    """
    if shift is None:
        shift = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
    if not _use_sparse(x):
        return torch.addmm(b_enc, x.detach() - shift, W_enc).gather(-1, indices)
    return _SparsePreActs.apply(x.detach(), shift, W_enc, b_enc, indices)


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """Σ_j values[b, j] · W_dec[indices[b, j]]: [batch, d_out], i.e. the dense ``acts @ W_dec`` for acts
    with only the k listed non-zeros per row; the backward touches only those k decoder rows."""
    if not _use_sparse(values):
        acts = values.new_zeros(values.shape[0], W_dec.shape[0]).scatter(-1, indices, values)
        return acts @ W_dec
    return _SparseDecode.apply(values, indices, W_dec)


def _use_sparse(t: torch.Tensor) -> bool:
    """The sparse kernels run on CPU tensors; elsewhere (CUDA, MPS) the dense equivalent is used."""
    return t.device.type == "cpu"


def _pattern(indices: torch.Tensor, n_cols: int) -> torch.Tensor:
    """CSR [batch, n_cols] with the k entries of every row at ``indices`` (values zero)."""
    b, k = indices.shape
    crow = torch.arange(0, b * k + 1, k, device=indices.device)
    with warnings.catch_warnings():          # "sparse CSR support is in beta": sampled_addmm is all we use
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, indices.flatten(), torch.zeros(b * k, device=indices.device),
                                       size=(b, n_cols), check_invariants=False)


def _sampled_products(a: torch.Tensor, B: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(a @ B)[r, indices[r, j]] for every r, j without the dense product: [batch, k]."""
    out = torch.sparse.sampled_addmm(_pattern(indices, B.shape[1]).to(a.dtype), a, B, beta=0.0)
    return out.values().view(indices.shape)


def _transposed_product(indices: torch.Tensor, weights: torch.Tensor, dense: torch.Tensor, n_rows: int
                        ) -> torch.Tensor:
    """Sᵀ @ dense for the sparse [batch, n_rows] matrix S with S[r, indices[r, j]] = weights[r, j]: [n_rows, d]."""
    b, k = indices.shape
    rows = torch.arange(b, device=indices.device).repeat_interleave(k)
    S_t = torch.sparse_coo_tensor(torch.stack([indices.flatten(), rows]), weights.flatten(), (n_rows, b),
                                  check_invariants=False)
    return torch.sparse.mm(S_t, dense)


class _SparsePreActs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, W_enc, b_enc, indices):
        xin = x - shift
        out = _sampled_products(xin, W_enc, indices) + b_enc[indices]
        ctx.save_for_backward(xin, W_enc, indices)
        return out

    @staticmethod
    def backward(ctx, grad):
        xin, W_enc, indices = ctx.saved_tensors
        d_in, d_sae = W_enc.shape
        grad_W = grad_shift = grad_b = None
        if ctx.needs_input_grad[2]:
            grad_W = _transposed_product(indices, grad.contiguous(), xin, d_sae).t()
        per_latent = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device).index_add_(
            0, indices.flatten(), grad.flatten())
        if ctx.needs_input_grad[3]:
            grad_b = per_latent
        if ctx.needs_input_grad[1]:
            grad_shift = -(W_enc @ per_latent)
        return None, grad_shift, grad_W, grad_b, None


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, indices, W_dec):
        b, k = indices.shape
        rows = torch.arange(b, device=indices.device).repeat_interleave(k)
        S = torch.sparse_coo_tensor(torch.stack([rows, indices.flatten()]), values.flatten(), (b, W_dec.shape[0]),
                                    check_invariants=False)
        ctx.save_for_backward(values, indices, W_dec)
        return torch.sparse.mm(S, W_dec)

    @staticmethod
    def backward(ctx, grad):
        values, indices, W_dec = ctx.saved_tensors
        grad = grad.contiguous()
        grad_values = _sampled_products(grad, W_dec.t(), indices) if ctx.needs_input_grad[0] else None
        grad_W = _transposed_product(indices, values, grad, W_dec.shape[0]) if ctx.needs_input_grad[2] else None
        return grad_values, None, grad_W


class _JumpReLU(torch.autograd.Function):
    """z * H(z - θ); ∂/∂θ by the rectangle-kernel straight-through estimator (Rajamanoharan 2024)."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype)
        grad_theta = (-(theta / eps) * window * grad).reshape(-1, theta.shape[-1]).sum(0)
        return grad * (pre > theta), grad_theta, None


class _Step(torch.autograd.Function):
    """H(z - θ) with the straight-through ∂/∂θ = -K((z - θ)/ε)/ε; no gradient to z."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype)
        grad_theta = (-(1.0 / eps) * window * grad).reshape(-1, theta.shape[-1]).sum(0)
        return None, grad_theta, None
