"""The report's "What we found" summary: the sentences sections mark as headline, under the survey's questions."""
from __future__ import annotations

import sys

from uncover.report import build
from uncover.report import html as H


class Marked:
    """A section whose findings come from its data: the first ``headline`` sentences are its answer."""

    def __init__(self, key: str, title: str, sentences: list[str], headline: int, fails: bool = False):
        self.key, self.title, self.version = key, title, "1"
        self.sentences, self.headline, self.fails = sentences, headline, fails

    def compute(self, model, ctx):
        if self.fails:
            raise RuntimeError("no data")
        return {"sentences": self.sentences, "layers": model.cfg.n_layers}

    def render(self, data):
        return H.findings(data["sentences"], headline=self.headline) + f"<p>{data['layers']} layers</p>"


def test_findings_mark_only_the_headline_sentences():
    body = H.findings(["a < 1", "b", "c"], headline=2)
    assert H.headlines(body) == ["a &lt; 1", "b"]
    assert H.headlines(H.findings(["a", "b"])) == []


def test_summary_groups_headlines_by_question_and_links_sections(tmp_path, monkeypatch):
    from tests.conftest import tiny_hf
    from tests.editing.conftest import word_tokenizer

    tiny_hf("llama").save_pretrained(tmp_path / "tiny")
    word_tokenizer().save_pretrained(tmp_path / "tiny")
    module = type(sys)("marked_sections")
    module.DYN = Marked("dynamics", "Training dynamics", ["Grokking at step 812.", "Slingshots: 3."], 1)
    module.COMP = Marked("components", "Components", ["Induction heads L1H2, L1H3.", "IOI r = 0.9.", "x"], 2)
    module.EDIT = Marked("editing", "Editing", [], 0, fails=True)
    module.NEW = Marked("novel", "A new section", ["Something new: 7."], 1)
    monkeypatch.setitem(sys.modules, "marked_sections", module)
    monkeypatch.setattr(build, "SECTIONS", [f"marked_sections:{n}" for n in ("DYN", "COMP", "EDIT", "NEW")])
    built = build.build_report(str(tmp_path / "tiny"), tmp_path / "out")
    page = built.path.read_text()
    summary = page[page.index('<section id="summary"'):page.index("</section>", page.index('<section id="summary"'))]
    # survey order (components before dynamics), whatever the section order; only headline sentences
    assert summary.index("Induction heads L1H2") < summary.index("IOI r = 0.9.") < summary.index("Grokking at step 812")
    assert "Slingshots" not in summary and "<li>x" not in summary
    assert 'Grokking at step 812. <a href="#dynamics">' in summary
    assert "The section Editing failed" in summary and 'href="#editing"' in summary
    assert "Other sections" in summary and "Something new: 7." in summary
    # the contents follow the survey's questions too
    contents = page[page.index("<h2>Contents</h2>"):page.index("<section id=\"dynamics\"")]
    assert contents.index("How do its components compute?") < contents.index("How does generalisation arise")
    assert 'Editing</a> (failed)' in contents


def test_no_headlines_no_summary(tmp_path):
    class Plain:
        key, title = "plain", "Plain"
    page_parts = [(Plain, "<p>nothing found</p>", 0.1, True, 10**9)]
    toc, summary = build._contents(page_parts)
    assert summary == "" and 'href="#plain"' in toc
