"""Entity-level scores as the CoNLL evaluation (conlleval) and seqeval's default mode count them.

An entity is a maximal span of one type: it starts at ``B-X``, or at ``I-X`` after anything that is not ``X``
(conlleval's lenient IOB reading), or — for IO tags — at ``X`` after anything else. A predicted entity counts only
with the exact span and type. Precision, recall and f1 are micro-averaged over all entities; the per-type table is
what ``sklearn``/``seqeval``'s ``classification_report`` prints (precision, recall, f1, support).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

OUTSIDE = "O"


def _split(tag: str) -> tuple[str, str]:
    """(prefix, type): ``B-PER`` → (B, PER); ``PER`` (IO) → (I, PER); ``O`` → (O, "")."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "I", tag


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of one sentence as (type, start, end) token spans, ``end`` exclusive."""
    spans: list[tuple[str, int, int]] = []
    kind, start = "", -1
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, typ = _split(tag)
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and typ != kind)
        if kind and (prefix == OUTSIDE or begins):
            spans.append((kind, start, i))
            kind = ""
        if begins:
            kind, start = typ, i
        if prefix in ("E", "S") and kind:  # IOBES: the entity ends here
            spans.append((kind, start, i + 1))
            kind = ""
    return spans


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def evaluate(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/f1 over entities, token accuracy, and the per-type ``report`` table."""
    tp_by, pred_by, true_by = Counter(), Counter(), Counter()
    correct = total = 0
    for t, p in zip(true, pred, strict=True):
        if len(t) != len(p):
            raise ValueError(f"a sentence has {len(t)} true tags but {len(p)} predicted")
        te, pe = set(entities(t)), set(entities(p))
        for typ, *_ in te:
            true_by[typ] += 1
        for typ, *_ in pe:
            pred_by[typ] += 1
        for typ, *_ in te & pe:
            tp_by[typ] += 1
        correct += sum(a == b for a, b in zip(t, p, strict=True))
        total += len(t)
    precision, recall, f1 = _prf(sum(tp_by.values()), sum(pred_by.values()), sum(true_by.values()))
    report = {}
    for typ in sorted(set(true_by) | set(pred_by)):
        p, r, f = _prf(tp_by[typ], pred_by[typ], true_by[typ])
        report[typ] = {"precision": p, "recall": r, "f1": f, "support": true_by[typ]}
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": correct / total if total else 0.0,
        "report": report,
    }
