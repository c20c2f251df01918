"""Task datasets: equal-length pairs, correct answers, seeded, clear errors for multi-token words."""
import pytest
import torch

from uncover.data import tasks as T
from uncover.data.ioi import ioi_task
from uncover.errors import UncoverError


@pytest.mark.parametrize("name", ["ioi", "induction", "greater-than", "docstring"])
def test_task_shapes_and_seeding(smollm, name):
    task = T.make_task(smollm, name, n=6, seed=1)
    assert task.clean.shape == task.corrupt.shape and len(task) == 6
    if task.attention_mask is not None:
        assert task.attention_mask.shape == task.clean.shape
    again = T.make_task(smollm, name, n=6, seed=1)
    assert torch.equal(task.clean, again.clean) and torch.equal(task.answers, again.answers)
    assert not torch.equal(task.clean, task.corrupt)


def test_ioi_prompts_and_answers(smollm):
    task = ioi_task(smollm, n=4)
    for i, prompt in enumerate(task.clean_prompts):
        io, s = task.info["io"][i], task.info["s"][i]
        assert prompt.count(io.strip()) == 1 and prompt.count(s.strip()) == 2
        assert smollm.to_single_token(io) == int(task.answers[i])
        corrupt = task.corrupt_prompts[i]
        assert io.strip() not in corrupt and s.strip() not in corrupt  # ABC: three other names
    with torch.no_grad():
        clean = task.metric(smollm(task.clean, attention_mask=task.attention_mask))
        corrupt = task.metric(smollm(task.corrupt, attention_mask=task.attention_mask))
    assert float(clean) > 2 and abs(float(corrupt)) < float(clean) / 2


def test_greater_than_answer_sets(smollm):
    task = T.make_task(smollm, "greater-than", n=5)
    mode = task.info["mode"]
    assert mode == "digit"  # SmolLM2 splits numbers into digits
    for i, year in enumerate(task.info["years"]):
        tens = (year % 100) // 10
        answers = [smollm.tokenizer.decode([int(a)]) for a in task.answers[i] if a >= 0]
        wrong = [smollm.tokenizer.decode([int(a)]) for a in task.wrong[i] if a >= 0]
        assert answers == [str(d) for d in range(tens + 1, 10)] and wrong == [str(d) for d in range(tens)]
        assert task.clean_prompts[i].endswith(f"to the year {year // 100}")


def test_induction_and_docstring_answers(smollm):
    ind = T.make_task(smollm, "induction", n=3, half_len=5)
    assert torch.equal(ind.clean[:, -4:], ind.clean[:, :4]) and torch.equal(ind.answers, ind.clean[:, 4])
    assert torch.equal(ind.corrupt[:, 4], ind.wrong)
    doc = T.make_task(smollm, "docstring", n=2)
    for i, prompt in enumerate(doc.clean_prompts):
        args = prompt.split("(self,")[1].split(")")[0].split(",")
        assert smollm.to_single_token(args[2]) == int(doc.answers[i])
        assert prompt.endswith(":param") and doc.corrupt_prompts[i].count(args[2]) == 0


def test_facts_task_and_save_load(smollm, tmp_path):
    from uncover.data.facts import Fact

    facts = [Fact("France", "capital", " Paris"), Fact("Japan", "capital", " Tokyo"), Fact("Italy", "capital", " Rome")]
    task = T.facts_task(smollm, n=3, facts=facts)
    assert len(task) >= 2 and (task.answers != task.wrong).all()
    task.save(tmp_path / "facts")
    back = T.Task.load(tmp_path / "facts")
    assert torch.equal(back.clean, task.clean) and back.clean_prompts == task.clean_prompts


def test_errors_name_the_fix(smollm):
    with pytest.raises(UncoverError, match="not a single token"):
        ioi_task(smollm, n=2, names=[" Mary", " John", " Tom", " Bob", " Xylophonia"])
    with pytest.raises(UncoverError, match="Unknown task"):
        T.make_task(smollm, "sorting")
    with pytest.raises(UncoverError, match="differ in token length"):
        T.tokenize_pairs(smollm, ["one two"], ["one two three"])


class _Tokenizer:
    """Splits on spaces; raises on a word it has no rule for (a tokenizer bug, not a multi-token word)."""

    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, text, add_special_tokens=False):
        if "%" in text:
            raise RuntimeError("tokenizer bug")
        return {"input_ids": [self.vocab[w] for w in text.split()]}

    def decode(self, ids):
        return " ".join(k for k, v in self.vocab.items() if v in ids)


class _Model:
    name = "fake"

    def __init__(self):
        self.tokenizer = _Tokenizer({"a": 1, "b": 2, "c": 3})


def test_single_token_catches_only_the_multi_token_condition():
    model = _Model()
    assert T.single_token(model, "b") == 2
    with pytest.raises(UncoverError, match=r"not a single token .* splits into \['a', 'b'\]"):
        T.single_token(model, "a b", "name")
    with pytest.raises(RuntimeError, match="tokenizer bug"):  # not disguised as "not a single token"
        T.single_token(model, "%")
    assert T.single_token_pool(model, ["a", "a b", "c"], 2, "name") == ["a", "c"]
    with pytest.raises(RuntimeError, match="tokenizer bug"):
        T.single_token_pool(model, ["a", "%"], 1, "name")
    model.tokenizer = None
    with pytest.raises(UncoverError, match="no tokenizer"):
        T.single_token(model, "a")
