"""A tiny random Llama with a word-level tokenizer, the things `uncover serve` can be given (an SAE, an SAE
made for another width, a saved direction, a circuit graph, a corpus), and the explorer over them."""
from __future__ import annotations

import threading
import time

import pytest
import torch

import uncover as uc
from tests.conftest import tiny_hf
from tests.editing.conftest import word_tokenizer

TOKEN = "test-token-0123456789"
BASE = "http://127.0.0.1:8765"
PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="session")
def lm() -> uc.Model:
    return uc.load(tiny_hf("llama"), tokenizer=word_tokenizer())


@pytest.fixture(scope="session")
def assets(tmp_path_factory, lm):
    """Folders and files named on the command line: good and mismatched SAEs, a direction, a circuit, a corpus."""
    from uncover.explorer.circuits import write_circuit_graph
    from uncover.features.sae import SAE, SAEConfig
    from uncover.representations.directions import Direction

    root = tmp_path_factory.mktemp("explorer-assets")
    good = SAE(SAEConfig(d_in=64, d_sae=128, architecture="relu", hook_name="blocks.1.hook_resid_post"), seed=1)
    with torch.no_grad():
        good.b_enc.fill_(0.05)
    good.save(root / "saes" / "resid1")
    SAE(SAEConfig(d_in=32, d_sae=64, architecture="relu", hook_name="blocks.1.hook_resid_post",
                  model_name="another-model")).save(root / "saes" / "wrong_width")
    g = torch.Generator().manual_seed(0)
    Direction(torch.randn(2, 64, generator=g), [1, 2], concept="random").save(root / "dirs" / "random")
    nodes = [{"id": "embed", "layer": -1, "kind": "embed"}, {"id": "L0H1", "layer": 0, "kind": "head", "score": 0.5},
             {"id": "L1 mlp", "layer": 1, "kind": "mlp"}, {"id": "L2H3", "layer": 2, "kind": "head"},
             {"id": "logits", "layer": 3, "kind": "logits"}]
    edges = [{"source": "embed", "target": "L0H1", "score": 0.9}, {"source": "L0H1", "target": "L2H3", "score": -0.4},
             {"source": "embed", "target": "L1 mlp", "score": 0.2}, {"source": "L1 mlp", "target": "L2H3", "score": 0.3},
             {"source": "L2H3", "target": "logits", "score": 1.2}]
    (root / "circuits").mkdir()
    write_circuit_graph(root / "circuits" / "toy.json", nodes, edges, model="tiny", title="toy circuit")
    words = "The Eiffel Tower is in Paris . The city of Rome is the capital of Italy . "
    (root / "corpus.txt").write_text(words * 400)
    return root


@pytest.fixture(scope="session")
def explorer(lm, assets):
    from uncover.explorer.session import Explorer

    return Explorer(lm, saes=[assets / "saes"], directions=[assets / "dirs"], circuits=[assets / "circuits"],
                    corpus=assets / "corpus.txt")


@pytest.fixture(scope="session")
def client(explorer):
    from fastapi.testclient import TestClient

    from uncover.explorer.server import create_app

    with TestClient(create_app(explorer, TOKEN), base_url=BASE, headers={"X-Uncover-Token": TOKEN}) as c:
        yield c


@pytest.fixture(scope="session")
def live_url(explorer):
    """A real uvicorn server on a free loopback port, in a thread; yields the URL with the token."""
    from uncover.explorer.server import make_server

    server, sock, address = make_server(explorer, "127.0.0.1", 0, token=TOKEN)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield address
    server.should_exit = True
    thread.join(10)
    sock.close()
