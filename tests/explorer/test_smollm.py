"""The explorer on the bundled smollm2-135m: what a user sees for a fact prompt equals the model's own numbers."""
from __future__ import annotations

import pytest
import torch

from tests.explorer.conftest import BASE, TOKEN

PROMPT = "The Eiffel Tower is located in the city of"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_client(smollm):
    from fastapi.testclient import TestClient

    from uncover.explorer.server import create_app
    from uncover.explorer.session import Explorer

    with TestClient(create_app(Explorer(smollm), TOKEN), base_url=BASE, headers={"X-Uncover-Token": TOKEN}) as c:
        yield c


def test_fact_prompt_next_token_lens_and_dla(smol_client, smollm):
    paris = smollm.to_single_token(" Paris")
    run = smol_client.post("/api/run", json={"prompt": PROMPT, "k": 3}).json()
    ids = smollm.to_tokens(PROMPT)
    with torch.no_grad():
        probs = smollm.hf(ids).logits[0, -1].softmax(-1)
    assert run["next"][0]["id"] == paris and run["next"][0]["prob"] == pytest.approx(float(probs[paris]), abs=1e-5)
    lens = smol_client.post("/api/lens", json={"prompt": PROMPT, "target": " Paris"}).json()
    assert len(lens["labels"]) == smollm.cfg.n_layers + 1
    assert lens["target_prob"][-1][-1] == pytest.approx(float(probs[paris]), abs=1e-5)
    assert lens["target_rank"][-1][-1] == 0 and lens["target_prob"][0][-1] < 0.01  # the lens finds Paris late
    dla = smol_client.post("/api/dla", json={"prompt": PROMPT, "token": " Paris"}).json()
    assert dla["total"] == pytest.approx(dla["actual"], abs=1e-3)


def test_head_scores_find_induction_heads(smol_client, smollm):
    scores = torch.tensor(smol_client.get("/api/heads").json()["scores"]["induction"])
    assert scores.shape == (smollm.cfg.n_layers, smollm.cfg.n_heads)
    assert scores.max() > 0.5  # smollm has strong induction heads (L18H6 ~0.9 on repeated random tokens)
