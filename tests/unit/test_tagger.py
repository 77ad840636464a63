"""The tagger's ML code and data formats on tiny configs: entity scoring as conlleval counts, sub-word alignment,
dataset validation with line numbers, training that learns, resume after a stop, tagging with character offsets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from shared.tagcorpus import conll, jsonl, sentences
from shared.tagdata import TagDataError, parse, stats
from worker.ml.common import Stopped, pick_device
from worker.ml.tagger.data import IGNORE, encode, train_wordpiece
from worker.ml.tagger.infer import Tagger, group_entities
from worker.ml.tagger.metrics import entities, evaluate
from worker.ml.tagger.model import load_tagger
from worker.ml.tagger.train import TaggerTrainConfig, lr_schedule, train_tagger

CPU = pick_device("cpu")


def test_entities_follow_conlleval():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]
    assert entities(["I-PER", "I-PER", "B-PER"]) == [("PER", 0, 2), ("PER", 2, 3)]  # I- after O starts one
    assert entities(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]  # a type change starts one
    assert entities(["PER", "PER", "O", "LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]  # IO tags


def test_scores_count_exact_spans_and_types():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # PER span cut short: wrong
    s = evaluate(true, pred)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(5 / 6)
    assert s["report"]["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["report"]["LOC"]["f1"] == 1.0


def test_conll_and_jsonl_parse_with_line_numbers():
    rows = sentences(5, seed=3)
    assert [(s.tokens, s.tags) for s in parse(conll(rows), "conll")] == rows
    assert [(s.tokens, s.tags) for s in parse(jsonl(rows), "jsonl")] == rows
    st = stats(conll(rows).encode(), "conll")
    assert st["sentences"] == 5 and st["labels"][0] == "O" and st["scheme"] == "BIO"
    assert sum(st["label_counts"].values()) == st["tokens"]
    with pytest.raises(TagDataError, match="line 3"):
        parse("-DOCSTART- O\n\nlonely\n", "conll")
    with pytest.raises(TagDataError, match="line 2: 2 tokens but 1 tags"):
        parse(
            json.dumps({"tokens": ["a"], "tags": ["O"]}) + "\n" + json.dumps({"tokens": ["a", "b"], "tags": ["O"]}),
            "jsonl",
        )
    many = "\n\n".join(f"w{i} B-T{i}" for i in range(300))
    with pytest.raises(TagDataError, match="over the limit of 256"):
        parse(many, "conll")


def test_first_subtoken_carries_the_label():
    tok = train_wordpiece(["Lovelace", "visited", "Paris"] * 3, vocab_size=30)  # too small for whole words
    label2id = {"O": 0, "B-PER": 1, "B-LOC": 2}
    (enc,) = encode(tok, [(["Lovelace", "visited", "Paris"], ["B-PER", "O", "B-LOC"])], label2id, 64)
    scored = [lab for lab in enc.labels if lab != IGNORE]
    assert scored == [1, 0, 2]  # one label per word, whatever its sub-tokens
    assert len(enc.input_ids) > 5 and enc.labels[0] == IGNORE and enc.labels[-1] == IGNORE  # [CLS] … [SEP]


def test_group_entities_merges_subtokens_with_offsets():
    text = "Ada Lovelace met Bob."
    toks = [(0, 3, "B-PER", 0.9), (4, 12, "I-PER", 0.7), (13, 16, "O", 0.99), (17, 20, "B-PER", 0.8)]
    ents = group_entities(text, toks)
    assert [(e.label, e.text, e.start, e.end) for e in ents] == [("PER", "Ada Lovelace", 0, 12), ("PER", "Bob", 17, 20)]
    assert ents[0].score == pytest.approx(0.8)


CFG = dict(size="tiny", vocab_size=400, batch_size=16, eval_every=30, checkpoint_every=30, seed=1, learning_rate=2e-3)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("linear", [1 / 3, 2 / 3, 1.0, 0.75, 0.5, 0.25]), ("constant", [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0])],
)
def test_lr_schedules_warm_up_then_decay_or_hold(kind, expected):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = lr_schedule(opt, kind, warmup=2, total=6)
    rates = []
    for _ in range(6):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([2.0 * f for f in expected])
    with pytest.raises(ValueError):
        lr_schedule(opt, "cosine", 0, 6)


def test_train_learns_then_tags_with_offsets(tmp_path):
    torch.set_num_threads(1)
    points = []
    result = train_tagger(
        TaggerTrainConfig(max_steps=90, **CFG),
        sentences(240, seed=0),
        sentences(40, seed=1),
        tmp_path,
        CPU,
        report=lambda step, total, **m: points.append((step, m)),
    )
    f1 = [m["f1"] for _, m in points if "f1" in m]
    assert len(f1) == 3 and f1[-1] > 0.5 and f1[-1] > f1[0], f1
    assert result.metrics["f1"] == f1[-1] and set(result.report) == {"PER", "LOC", "ORG"}
    assert result.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert list(result.model_dir.glob("*.safetensors")) and not list(result.model_dir.glob("*.bin"))
    model, tok, labels = load_tagger(str(result.model_dir), torch.device("cpu"))
    text = "Yesterday Ada Lovelace met Marie Curie at the Royal Society ."
    (ents,) = Tagger(model, tok, labels, CPU).tag([text])
    assert ents and all(text[e.start : e.end] == e.text and 0 < e.score <= 1 for e in ents)
    assert "PER" in {e.label for e in ents}


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    train, val = sentences(120, seed=0), sentences(20, seed=1)
    cfg = TaggerTrainConfig(max_steps=40, **{**CFG, "checkpoint_every": 100, "eval_every": 100})

    def stop_at_25(step, total, **m):
        if step == 25:
            raise Stopped("shutdown")

    with pytest.raises(Stopped):
        train_tagger(cfg, train, val, tmp_path / "split", CPU, report=stop_at_25)
    # the same vocabulary for the uninterrupted run (WordPiece training breaks frequency ties in no fixed order)
    shutil.copytree(tmp_path / "split" / "tokenizer", tmp_path / "whole" / "tokenizer")
    whole = train_tagger(cfg, train, val, tmp_path / "whole", CPU)
    resumed = train_tagger(cfg, train, val, tmp_path / "split", CPU)
    assert resumed.resumed_from_step == 25 and whole.resumed_from_step is None
    a, _, _ = load_tagger(str(whole.model_dir), torch.device("cpu"))
    b, _, _ = load_tagger(str(resumed.model_dir), torch.device("cpu"))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
