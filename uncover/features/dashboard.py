"""A self-contained HTML feature dashboard: one card per SAE latent (top contexts with highlighted
tokens, activation histogram, logit effects, firing density, polysemanticity)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from uncover.core.results import Progress, no_progress
from uncover.features.analysis import (
    activation_histogram, context_window, logit_effects, polysemanticity, sae_latents, top_contexts,
)
from uncover.features.sae import SAE
from uncover.report import html

if TYPE_CHECKING:
    from uncover.core.model import Model

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
.card{border:1px solid #ddd;border-radius:8px;padding:0.8em 1em;margin:1em 0}
.ctx{font-family:ui-monospace,monospace;font-size:0.85em;white-space:pre-wrap}.tok{border-radius:2px}
table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}"""


def feature_cards(
    model: "Model", sae: SAE, tokens: torch.Tensor, latents: Sequence[int] | None = None, n_top: int = 8,
    n_default: int = 12, progress: Progress = no_progress,
) -> list[dict[str, Any]]:
    """JSON-able cards for ``latents`` (default: the n_default most frequent latents firing on < 5% of
    tokens) over tokens [n_seqs, seq_len]."""
    from uncover.features.store import harvest

    if latents is None:
        fired = torch.zeros(sae.cfg.d_sae)
        n = 0
        for s in range(0, len(tokens), 16):
            x = harvest(model, [sae.cfg.hook_name], tokens[s:s + 16])[sae.cfg.hook_name]
            fired += (sae.encode(x) > 0).sum(0)
            n += len(x)
        density = fired / n
        score = torch.where(density < 0.05, density, torch.zeros_like(density))
        latents = score.topk(n_default).indices.tolist()
    latents = list(latents)
    ctx = top_contexts(model, sae_latents(sae, latents), tokens, n_top=min(n_top, len(tokens)), progress=progress)
    poly = polysemanticity(ctx)
    effects = logit_effects(model, sae.W_dec[latents].detach(), k=8)
    cards = []
    for u, latent in enumerate(latents):
        cards.append({
            "title": f"latent {latent}", "max_activation": float(ctx.values[u, 0]),
            "polysemanticity": float(poly[u]),
            "contexts": [context_window(model, ctx, u, r) for r in range(ctx.values.shape[1])],
            "histogram": activation_histogram(ctx.acts[u]),
            "top_tokens": effects["top_tokens"][u], "bottom_tokens": effects["bottom_tokens"][u],
        })
    return cards


def cards_page(title: str, cards: Sequence[dict[str, Any]]) -> str:
    """A standalone HTML page (plotly.js inlined, opens offline) showing the cards."""
    from plotly.offline import get_plotlyjs

    from uncover.features.report import card_html

    body = "".join(card_html(c) for c in cards)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{get_plotlyjs()}</script></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")


def feature_dashboard(
    model: "Model", sae: SAE, tokens: torch.Tensor, latents: Sequence[int] | None = None,
    progress: Progress = no_progress,
) -> str:
    """The HTML dashboard page for an SAE's latents."""
    cards = feature_cards(model, sae, tokens, latents, progress=progress)
    return cards_page(f"{sae.cfg.hook_name} SAE ({sae.cfg.d_sae} latents) on {model.name}", cards)
