"""Lying heads: prompts, answer reading, probes and head patching against naive computations on a tiny
model; bad input; the findings' wording follows the data; a small check on smollm2."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

import uncover as uc
from tests.applications.conftest import words_tokenizer
from tests.conftest import tiny_hf
from uncover.applications import report as AR
from uncover.applications.alignment import lying as ly
from uncover.data import lying as data
from uncover.errors import UncoverError
from uncover.representations.probes import split_indices

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = data.Condition("plain, 2-shot, larger_than", "plain", "larger_than", 2)
CHAT = data.Condition("chat, instruction only, larger_than", "chat", "larger_than", 0)
TEMPLATE = ("{% for m in messages %}< {{ m['role'] }} > {{ m['content'] }} {% endfor %}"
            "{% if add_generation_prompt %}< assistant >{% endif %}")
N = 8


def _texts() -> list[str]:
    texts = ["< system > < user > < assistant > True False", *data.SYSTEM.values(), *data.HEADER.values(),
             data.QUESTION]
    for c in (PLAIN, CHAT, data.CONDITIONS[0]):
        shots, test = data.lying_statements(c, 40)
        texts += [s.text for s in shots + test]
    return texts


@pytest.fixture(scope="module")
def lm() -> uc.Model:
    """Tiny random Llama reading the lying prompts word by word, with a chat template."""
    tok = words_tokenizer(_texts())
    tok.chat_template = TEMPLATE
    return uc.load(tiny_hf("llama", seed=3), tokenizer=tok)


@pytest.fixture(scope="module")
def result(lm) -> ly.LyingResult:
    saved, ly.ATTRIBUTION_ROWS = ly.ATTRIBUTION_ROWS, 3  # backward passes over uneven chunks (3 + 3 + 2 rows)
    try:
        return ly.lying_heads(lm, conditions=(CHAT, PLAIN), n=N, candidates=None, probe="mass_mean")
    finally:
        ly.ATTRIBUTION_ROWS = saved


def _pair(lm, cond):
    shots, test = data.lying_statements(cond, N)
    chat = ly.chat_function(lm) if cond.format == "chat" else None
    honest, lying = data.lying_prompts(cond, test, shots, chat)
    return honest, lying, torch.tensor([s.label for s in test])


def test_prompts_balanced_disjoint_and_differing_only_in_instruction_and_answers(lm):
    shots, test = data.lying_statements(PLAIN, 12)
    assert sum(s.label for s in test) == 6 and len(test) == 12
    assert not {s.subject for s in shots} & {s.subject for s in test}
    honest, lying, _ = _pair(lm, PLAIN)
    for h, l in zip(honest, lying):
        hl, ll = h.split("\n"), l.split("\n")
        assert hl[0] == data.HEADER["honest"] and ll[0] == data.HEADER["lying"] and hl[-1] == ll[-1]
        for a, b in zip(hl[1:-1], ll[1:-1]):  # the same example, answered the other way
            assert a.rsplit(" ", 1)[0] == b.rsplit(" ", 1)[0] and {a.split()[-1], b.split()[-1]} == {"True", "False"}
    honest, lying, _ = _pair(lm, CHAT)
    assert data.SYSTEM["honest"] in honest[0] and data.SYSTEM["lying"] in lying[0]
    assert honest[0].endswith("< assistant >")


def test_measure_condition_matches_single_prompt_runs(lm):
    row = ly.measure_condition(lm, PLAIN, N)
    honest, lying, y = _pair(lm, PLAIN)
    t, f = lm.tokenizer.convert_tokens_to_ids(["True", "False"])
    for mode, prompts in (("honest", honest), ("lying", lying)):
        with torch.no_grad():
            gaps = [float(lm(lm.to_tokens(p))[0, -1, t] - lm(lm.to_tokens(p))[0, -1, f]) for p in prompts]
        ranked = sorted(range(N), key=lambda i: -gaps[i])[: N // 2]  # calibrated: the top half says True
        naive = sum((i in ranked) == bool(y[i]) for i in range(N)) / N
        assert row[f"{mode}_acc"] == pytest.approx(naive)
        assert row[f"{mode}_raw_acc"] == pytest.approx(sum((g > 0) == bool(v) for g, v in zip(gaps, y)) / N)
    assert row["follows"] == (row["honest_acc"] >= ly.HONEST_MIN and row["lying_acc"] <= ly.LYING_MAX)


def _manual(lm, cond):
    """Honest / lying tokens, honest cache, signed metrics and a patched-run function by run_with_hooks."""
    honest, lying, y = _pair(lm, cond)
    h, mask = lm.to_tokens(honest, return_mask=True)
    l, _ = lm.to_tokens(lying, return_mask=True)
    t, f = ly.answer_ids(lm, cond)
    names = [f"blocks.{i}.attn.hook_z" for i in range(lm.cfg.n_layers)]
    names += [f"blocks.{i}.hook_resid_post" for i in range(lm.cfg.n_layers)]
    with torch.no_grad():
        hl, hc = lm.run_with_cache(h, names=names, attention_mask=mask)
        ll, lc = lm.run_with_cache(l, names=names, attention_mask=mask)

    def gap(logits):
        return (logits[:, -1, t] - logits[:, -1, f]).float()

    def metric(logits):
        return float(((2 * y - 1) * gap(logits)).mean())

    def patched(heads):
        hooks = []
        for layer, head in heads:
            def fn(z, hook, head=head, layer=layer):
                z = z.clone()
                z[:, :, head] = hc[f"blocks.{layer}.attn.hook_z"][:, :, head]
                return z
            hooks.append((f"blocks.{layer}.attn.hook_z", fn))
        with torch.no_grad():
            return lm.run_with_hooks(l, fwd_hooks=hooks, attention_mask=mask)

    return SimpleNamespace(y=y, hc=hc, lc=lc, m_h=metric(hl), m_l=metric(ll), metric=metric, gap=gap, patched=patched)


def test_patching_matches_a_manual_run_with_hooks_loop(lm, result):
    chosen = next(c for c in (CHAT, PLAIN) if c.name == result.chosen)
    ref = _manual(lm, chosen)
    assert result.metric_honest == pytest.approx(ref.m_h, abs=1e-4)
    assert result.metric_lying == pytest.approx(ref.m_l, abs=1e-4)
    L, H = lm.cfg.n_layers, lm.cfg.n_heads
    assert not result.patch_effect.isnan().any() and len(result.order) == L * H  # candidates=None: every head
    for layer, head in [(0, 0), (1, 2), (L - 1, H - 1)]:
        logits = ref.patched([(layer, head)])
        assert float(result.patch_effect[layer, head]) == pytest.approx(
            (ref.metric(logits) - ref.m_l) / (ref.m_h - ref.m_l), abs=1e-4)
        assert float(result.patch_accuracy[layer, head]) == ly.calibrated_accuracy(ref.gap(logits), ref.y)
    effects = [float(result.patch_effect[hd]) for hd in result.order]
    assert effects == sorted(effects, reverse=True)
    k = result.set_sizes[-1]
    logits = ref.patched(result.order[:k])
    assert result.set_accuracy[-1] == ly.calibrated_accuracy(ref.gap(logits), ref.y)
    assert result.set_effect[-1] == pytest.approx((ref.metric(logits) - ref.m_l) / (ref.m_h - ref.m_l), abs=1e-4)
    every = ref.patched([(a, b) for a in range(L) for b in range(H)])
    assert result.all_heads_effect == pytest.approx((ref.metric(every) - ref.m_l) / (ref.m_h - ref.m_l), abs=1e-4)
    # the restoring set is the first size that recovers RESTORE of the accuracy gap (or none does)
    shares = [result.restored_share(a) for a in result.set_accuracy]
    first = next((s for s, v in zip(result.set_sizes, shares) if not math.isnan(v) and v >= ly.RESTORE), None)
    assert result.restored_k == first
    row = next(r for r in result.conditions if r["name"] == result.chosen)  # the same statements as the search
    assert (result.honest_acc, result.lying_acc) == (row["honest_acc"], row["lying_acc"])
    assert result.set_sizes == sorted(set(result.set_sizes)) and result.set_sizes[0] == 1
    if result.restored_k is not None and result.restored_k > 1:
        assert result.restored_k - 1 in result.set_sizes  # the size just below was measured, and fails


def test_attribution_is_the_first_order_estimate_by_autograd(lm, result):
    chosen = next(c for c in (CHAT, PLAIN) if c.name == result.chosen)
    ref = _manual(lm, chosen)
    honest, lying, y = _pair(lm, chosen)
    l, mask = lm.to_tokens(lying, return_mask=True)
    layer, name = 1, "blocks.1.attn.hook_z"
    held = {}

    def grab(z, hook):
        z = z.detach().requires_grad_(True)
        held["z"] = z
        return z

    t, f = ly.answer_ids(lm, chosen)
    with torch.enable_grad(), lm.hooks([(name, grab)], force_write=True):
        logits = lm(l, attention_mask=mask)
        m = ((2 * y - 1) * (logits[:, -1, t] - logits[:, -1, f])).mean()
        (g,) = torch.autograd.grad(m, held["z"])
    assert float(m.detach()) == pytest.approx(ref.m_l, abs=1e-4)
    est = ((ref.hc[name] - held["z"].detach()) * g).sum(dim=(0, 1, 3)) / (ref.m_h - ref.m_l)  # per head
    assert torch.allclose(result.attribution[layer], est.float(), atol=1e-5, rtol=1e-4)


def test_probes_match_a_closed_form_mass_mean(lm, result):
    chosen = next(c for c in (CHAT, PLAIN) if c.name == result.chosen)
    ref = _manual(lm, chosen)
    labels = torch.cat([torch.ones(N), torch.zeros(N)]).long()
    train, test = split_indices(labels, 0.25, 0)

    def acc(X):
        mu1, mu0 = X[train][labels[train] == 1].mean(0), X[train][labels[train] == 0].mean(0)
        w = mu1 - mu0
        pred = (X[test] @ w - w @ (mu1 + mu0) / 2 > 0).long()
        return float((pred == labels[test]).float().mean())

    for layer in range(lm.cfg.n_layers):
        r = f"blocks.{layer}.hook_resid_post"
        X = torch.cat([ref.hc[r][:, -1], ref.lc[r][:, -1]]).double()
        assert float(result.resid_probe[layer]) == pytest.approx(acc(X))
        z = f"blocks.{layer}.attn.hook_z"
        for head in range(lm.cfg.n_heads):
            X = torch.cat([ref.hc[z][:, -1, head], ref.lc[z][:, -1, head]]).double()
            assert float(result.head_probe[layer, head]) == pytest.approx(acc(X))


def test_candidates_are_the_top_heads_by_attribution(lm):
    r = ly.lying_heads(lm, conditions=(PLAIN,), n=N, candidates=3, max_heads=2, positions="last")
    measured = {tuple(map(int, hd)) for hd in (~r.patch_effect.isnan()).nonzero().tolist()}
    top = {divmod(i, lm.cfg.n_heads) for i in r.attribution.flatten().argsort(descending=True)[:3].tolist()}
    assert measured == top and len(r.order) == 3 and len(r.set_sizes) <= 2
    assert r.chosen == PLAIN.name and r.meta["positions"] == "last"


def test_bad_input_is_refused_with_what_to_do(lm):
    with pytest.raises(UncoverError, match="even number"):
        data.lying_statements(PLAIN, 7)
    with pytest.raises(UncoverError, match="differ in token count"):
        ly.pair_tokens(lm, ["True or false : 12"], ["True or false : 12 is"])
    with pytest.raises(UncoverError, match="format must be one of"):
        data.Condition("x", "essay", "cities", 0)
    with pytest.raises(UncoverError, match="unknown truth family"):
        data.Condition("x", "plain", "planets", 0)
    with pytest.raises(UncoverError, match="positions must be one of"):
        ly.lying_heads(lm, conditions=(PLAIN,), n=N, positions="first")
    with pytest.raises(UncoverError, match="at least 1 head"):
        ly.lying_heads(lm, conditions=(PLAIN,), n=N, candidates=0)
    plain_tok = words_tokenizer(_texts())
    no_chat = uc.load(tiny_hf("llama"), tokenizer=plain_tok)
    with pytest.raises(UncoverError, match="no chat template"):
        ly.measure_condition(no_chat, CHAT, N)
    unknown = uc.load(tiny_hf("llama"), tokenizer=words_tokenizer(["a b c"]))
    with pytest.raises(UncoverError, match="unknown to"):
        ly.answer_ids(unknown, PLAIN)
    split = SimpleNamespace(name="split", tokenizer=SimpleNamespace(encode=lambda w, **_: [1, 2], unk_token_id=None))
    with pytest.raises(UncoverError, match="single tokens"):
        ly.answer_ids(split, PLAIN)


def _fake(followed: bool, restored: int | None, probe: float) -> ly.LyingResult:
    row = {"name": "c", "format": "plain", "family": "larger_than", "shots": 8, "n": 8, "tokens": 20,
           "honest_acc": 0.9 if followed else 0.5, "lying_acc": 0.1 if followed else 0.5, "honest_raw_acc": 0.5,
           "lying_raw_acc": 0.5, "honest_true_share": 1.0, "lying_true_share": 0.0, "honest_metric": 1.0,
           "lying_metric": -1.0, "follows": followed}
    effect = torch.tensor([[0.6, 0.1], [0.3, -0.2]])
    return ly.LyingResult([row], "c", followed, row["honest_acc"], row["lying_acc"], 2.0, -2.0,
                          torch.tensor([0.5, probe]), torch.tensor([[probe, 0.5], [0.5, 0.5]]), effect.clone(), effect,
                          effect, [(0, 0), (1, 0), (0, 1), (1, 1)], [1, 2], [0.5, 0.85 if restored else 0.6],
                          [0.5, 0.9], 0.9, 0.95, restored, {"probe": "mass_mean"})


def test_findings_wording_follows_the_data():
    yes = " ".join(AR.lying_findings(_fake(True, 2, 1.0)))
    no = " ".join(AR.lying_findings(_fake(False, None, 0.5)))
    assert "answers correctly" in yes and " lies " in yes and "does not reliably" not in yes.split(";")[0]
    assert "does not reliably answer correctly" in no and "does not reliably lie" in no
    assert "in none of them" in no and "in none" not in yes
    assert "separates" in yes and "does not reliably separate" in no
    assert "2 heads (L0H0, L1H0), accuracy 85%" in yes and "No set of up to 2 heads" in no
    assert "≥ 0.8" in yes  # the restoring test is printed with its threshold
    html = AR.render_lying(_fake(True, 2, 1.0))
    assert "<table>" in html and "Lying heads" in html and "L0H0, L1H0" in html


def test_a_share_exactly_at_the_cut_off_restores():
    r = _fake(True, 2, 1.0)
    r.honest_acc, r.lying_acc = 18 / 24, 8 / 24  # 16/24 recovers exactly 0.8 of the gap (0.79999... in floats)
    assert r.restored_share(16 / 24) >= ly.RESTORE and r.restored_share(15 / 24) < ly.RESTORE


def test_result_round_trip(result, tmp_path):
    back = ly.LyingResult.load(result.save(tmp_path / "r"))
    assert back.order == result.order and back.conditions == result.conditions
    assert torch.equal(back.patch_effect.nan_to_num(9), result.patch_effect.nan_to_num(9))


def test_cli_prints_the_tables(lm, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from uncover.applications.alignment.cli import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so "align" stays a sub-command
    monkeypatch.setattr(uc, "load", lambda name: lm)
    res = CliRunner().invoke(app, ["align", "lying", "tiny", "--n", "4", "--candidates", "2"])
    assert res.exit_code == 0, res.output
    assert "honest acc" in res.output and "heads patched" in res.output and "every head" in res.output


def test_smollm2_reads_single_token_answers_and_pairs_match(smollm):
    """The bundled model: answers are single tokens and every default condition's pairs have equal lengths;
    honest and lying prompts of the plain few-shot condition move the answer in opposite directions."""
    for cond in data.CONDITIONS:
        t, f = ly.answer_ids(smollm, cond)
        assert t != f
        shots, test = data.lying_statements(cond, 4)
        honest, lying = data.lying_prompts(cond, test, shots, ly.chat_function(smollm) if cond.format == "chat" else None)
        h, l, _ = ly.pair_tokens(smollm, honest, lying)
        assert h.shape == l.shape
    row = ly.measure_condition(smollm, data.CONDITIONS[-1], 16)
    assert row["honest_acc"] > row["lying_acc"]


def test_rendered_numbers_are_the_computed_ones(result):
    from tests.report_numbers import thresholds, unmatched_numbers
    from uncover.applications.pruning.report import _plain

    html = AR.render_lying(result)
    assert unmatched_numbers(html, _plain(result.to_fields()), [], thresholds(AR)) == []
    first = result.conditions[0]
    assert f"({first['honest_acc']:.0%})" in html and f"({first['lying_acc']:.0%})" in html
