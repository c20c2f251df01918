"""ActivationCache: the activations one forward pass saved, with the helpers lenses and DLA need."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

from uncover.core.names import act_name
from uncover.errors import UncoverError, closest

if TYPE_CHECKING:
    from uncover.core.model import Model


class ActivationCache:
    """A mapping standard hook name -> tensor, plus analysis helpers (TransformerLens-style)."""

    def __init__(self, data: dict[str, torch.Tensor], model: "Model"):
        self.data = data
        self.model = model

    def __getitem__(self, key: str | tuple) -> torch.Tensor:
        if isinstance(key, tuple):  # cache["resid_post", 3] style
            key = self._full_name(*key)
        if key not in self.data:
            raise UncoverError(
                f"'{key}' is not in this cache; cached names close to it: {closest(key, self.data)}. "
                "Ask for it with run_with_cache(..., names=[...])."
            )
        return self.data[key]

    def _full_name(self, short: str, layer: int | None = None) -> str:
        """``act_name(short, layer)``; with no layer, a bare short name gets its "hook_" prefix."""
        if layer is None:
            return short if short.startswith("hook_") or "." in short else f"hook_{short}"
        return act_name(short, layer)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def keys(self):
        return self.data.keys()

    def items(self):
        return self.data.items()

    def to(self, device: str | torch.device) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self.data.items()}, self.model)

    def stack(self, name: str, layers: list[int] | None = None) -> torch.Tensor:
        """Stack ``blocks.{l}.<name>`` over layers -> [n_layers, ...]; name like "hook_resid_post"."""
        layers = range(self.model.cfg.n_layers) if layers is None else layers
        return torch.stack([self[self._full_name(name, l)] for l in layers])

    def accumulated_resid(
        self, layer: int | None = None, incl_mid: bool = False, return_labels: bool = False
    ):
        """Residual stream before each layer (and the final one) -> [n, batch, pos, d_model].

        Entry i is resid_pre of layer i; the last entry is resid_post of the last layer (when ``layer``
        is None or equals n_layers). ``incl_mid`` interleaves resid_mid.
        """
        n = self.model.cfg.n_layers if layer is None else layer
        parts, labels = [], []
        for l in range(n):
            parts.append(self[f"blocks.{l}.hook_resid_pre"])
            labels.append(f"{l}_pre")
            if incl_mid:
                parts.append(self[f"blocks.{l}.hook_resid_mid"])
                labels.append(f"{l}_mid")
        if n == self.model.cfg.n_layers:
            parts.append(self[f"blocks.{n - 1}.hook_resid_post"])
            labels.append("final_post")
        out = torch.stack(parts)
        return (out, labels) if return_labels else out

    def decompose_resid(self, layer: int | None = None, return_labels: bool = False):
        """The final residual as a sum: embedding(s), then each layer's attention and MLP outputs.

        Returns [n_components, batch, pos, d_model]; the components sum to resid_post of the last layer
        (to float rounding). The embedding term is blocks.0.hook_resid_pre (what enters the stream).
        """
        n = self.model.cfg.n_layers if layer is None else layer
        parts, labels = [self["blocks.0.hook_resid_pre"]], ["embed"]
        for l in range(n):
            parts += [self[f"blocks.{l}.hook_attn_out"], self[f"blocks.{l}.hook_mlp_out"]]
            labels += [f"{l}_attn_out", f"{l}_mlp_out"]
        out = torch.stack(parts)
        return (out, labels) if return_labels else out

    def stack_head_results(self, layer: int | None = None, return_labels: bool = False):
        """Each head's output written to the residual, z_h @ W_O[h] -> [n_layers*n_heads, batch, pos, d_model].

        Needs hook_z. Biases of the output projection are not included (they belong to no head).
        ``layer`` limits to layers below it.
        """
        n = self.model.cfg.n_layers if layer is None else layer
        parts, labels = [], []
        for l in range(n):
            z = self[f"blocks.{l}.attn.hook_z"]  # [b, p, h, d_head]
            W_O = self.model.W_O(l).to(z.device, z.dtype)  # [h, d_head, d_model]
            parts.append(torch.einsum("bphd,hdm->hbpm", z, W_O))
            labels += [f"L{l}H{h}" for h in range(self.model.cfg.n_heads)]
        out = torch.cat(parts)
        return (out, labels) if return_labels else out

    def apply_ln_to_stack(self, stack: torch.Tensor, pos_slice=None) -> torch.Tensor:
        """Apply the final norm to each component with the scale frozen at the real final residual.

        stack [..., batch, pos, d_model] -> same shape. RMSNorm: x / rms(final) * w. LayerNorm: the
        component is centred, divided by the final residual's std and multiplied by w (the bias is a
        constant, not attributed to any component). Summing the result over components gives the real
        normalised residual (minus the LayerNorm bias).
        """
        if self.model.cfg.normalization == "none":  # toy models without a final norm
            return stack
        final = self[f"blocks.{self.model.cfg.n_layers - 1}.hook_resid_post"]
        if pos_slice is not None:
            final = final[:, pos_slice]
        norm = self.model.adapter.final_norm(self.model.hf)
        w = self.model.adapter.norm_weight(norm).to(stack.dtype)
        eps = self.model.adapter.norm_eps(norm)
        f = final.float()
        if self.model.cfg.normalization == "ln":
            f = f - f.mean(-1, keepdim=True)
            stack = stack - stack.mean(-1, keepdim=True)
        scale = (f.pow(2).mean(-1, keepdim=True) + eps).sqrt().to(stack.dtype)
        return stack / scale * w
