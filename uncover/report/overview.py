"""First report section: what the model predicts for a few prompts, and where in depth each answer
appears (the logit lens: every layer's residual read through the final norm and unembedding)."""
from __future__ import annotations

from typing import Any

import torch

from uncover.report import html as H
from uncover.report.section import ReportContext

PROMPTS = [
    "The Eiffel Tower is located in the city of",
    "When Mary and John went to the store, John gave a drink to",
    "The capital of Japan is",
    "One, two, three, four,",
    "The opposite of hot is",
]


class Overview:
    key = "overview"
    title = "Next-token predictions and the logit lens"
    version = "1"

    @torch.no_grad()
    def compute(self, model, ctx: ReportContext) -> dict[str, Any]:
        rows = []
        for prompt in ctx.progress(PROMPTS, "predictions"):
            tokens = model.to_tokens(prompt)
            logits, cache = model.run_with_cache(tokens, names="blocks.*.hook_resid_post", pos_slice=-1)
            probs = logits[0, -1].softmax(-1)
            top_p, top_i = probs.topk(5)
            answer = int(top_i[0])
            layers = model.apply_final_norm(cache.stack("hook_resid_post")[:, 0])  # [n_layers, d_model]
            lens = model.unembed(layers).softmax(-1)  # [n_layers, d_vocab]
            rows.append(
                {
                    "prompt": prompt,
                    "top": [[model.tokenizer.decode([i]), float(p)] for p, i in zip(top_p, top_i)],
                    "answer_prob_by_layer": lens[:, answer].tolist(),
                    "answer_rank_by_layer": (lens > lens[:, answer : answer + 1]).sum(-1).tolist(),
                    "lens_top_by_layer": [model.tokenizer.decode([int(i)]) for i in lens.argmax(-1)],
                }
            )
        return {"rows": rows, "n_layers": model.cfg.n_layers}

    def render(self, data: dict[str, Any]) -> str:
        import plotly.graph_objects as go

        rows = data["rows"]
        table = H.table(
            [[r["prompt"], ", ".join(f"{t!r} {p:.2f}" for t, p in r["top"][:3])] for r in rows],
            header=["prompt", "top next tokens (probability)"],
        )
        z = [r["answer_prob_by_layer"] for r in rows]
        text = [r["lens_top_by_layer"] for r in rows]
        fig = go.Figure(
            go.Heatmap(
                z=z, x=list(range(data["n_layers"])), y=[r["prompt"][-32:] for r in rows], text=text,
                hovertemplate="layer %{x}<br>P(final answer) %{z:.3f}<br>lens top token: %{text}<extra></extra>",
                colorscale="Viridis", zmin=0, zmax=1,
            )
        )
        fig.update_layout(title="Logit lens: probability of the model's final answer read at each layer",
                          xaxis_title="layer (resid_post)", height=320, margin=dict(l=10, r=10, t=40, b=40))
        found = []
        for r in rows:
            first = next((l for l, k in enumerate(r["answer_rank_by_layer"]) if k == 0), None)
            found.append(
                f"{r['prompt']!r} -> {r['top'][0][0]!r} (p={r['top'][0][1]:.2f}); it first becomes the lens's top "
                f"token at layer {first} of {data['n_layers']}." if first is not None else
                f"{r['prompt']!r} -> {r['top'][0][0]!r} (p={r['top'][0][1]:.2f})."
            )
        return table + H.plotly_figure(fig, "Hover for each layer's top token.") + H.findings(found, headline=1)


SECTION = Overview()
