"""Checks a submission against the database before it becomes a job: models, datasets, context lengths.

The pydantic schemas check shapes and ranges; this module checks what needs the registry and the datasets.
Every failure is an :class:`~web.errors.Invalid` (422) with the offending field in ``details``.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import lru_cache

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.imagedata import BUILTIN_SOURCES
from shared.kinds import KINDS
from shared.model_refs import find_model_recent, stored_file
from shared.models import Dataset, Model, ModelKind, User
from shared.objcache import get_cache
from shared.schemas.params import GanTrainParams, ImageGenerateParams, TextGenerateParams, TextTrainParams
from shared.schemas.tagger import TextTagParams, TextTrainTaggerParams
from shared.settings import get_settings
from shared.textdata import TextDataError, read_prompts
from web.errors import Invalid

logger = logging.getLogger(__name__)


def field_error(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", details=[{"loc": ["params", field], "msg": message}])


def _model(s: Session, user: User, ref: str, kind: str | tuple[str, ...], field: str) -> Model:
    model = find_model_recent(s, ref, user)
    if model is None:
        raise field_error(field, f"unknown model {ref!r} (see GET /api/v1/models)")
    kinds = (kind,) if isinstance(kind, str) else kind
    if model.kind not in kinds:
        raise field_error(field, f"model {ref!r} is a {model.kind}, not a {' or '.join(kinds)}")
    return model


def _dataset(s: Session, user: User, ds_id: str, kind: str, field: str) -> Dataset:
    stmt = select(Dataset).where(Dataset.id == ds_id)
    if not user.is_admin:
        stmt = stmt.where(Dataset.owner_id == user.id)
    ds = s.scalars(stmt.with_for_update(read=True)).first()  # held until the job row commits: no delete between
    if ds is None:
        raise field_error(field, f"unknown dataset {ds_id!r}")
    if ds.kind != kind:
        raise field_error(field, f"dataset {ds_id!r} holds {ds.kind}, not {kind}")
    return ds


def context_length(model: Model) -> int:
    return int(model.config.get("context_length") or 1024)


# Gunicorn's threads admit requests concurrently, and a tokenizer's Rust state must not be borrowed by two threads at
# once ("Already borrowed"). One lock covers loading and counting; both are quick.
_tokenizer_lock = threading.Lock()


@lru_cache(maxsize=8)
def _tokenizer(path: str):
    """The model's fast tokenizer from its ``tokenizer.json``, through ``tokenizers`` alone: the web never imports
    transformers or torch (they would add hundreds of MB to every gunicorn worker)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def _token_counts(model: Model, texts: list[str], rooms: list[int]) -> list[int] | None:
    """Prompt lengths in the model's tokens, when its tokenizer is on disk (None for uncached hub models).

    A byte-level BPE (GPT-2's) never makes more tokens than a text has UTF-8 bytes, so a prompt no longer in bytes
    than its room surely fits and is not tokenized (its count is given as its byte length): a 10,000-prompt job of
    ordinary prompts is admitted without tokenizing any of them.
    """
    path = stored_file(model, "tokenizer.json")
    if path is None or not path.exists():
        return None
    with _tokenizer_lock:
        tokenizer = _tokenizer(str(path))
        sizes = [len(t.encode()) for t in texts]
        if type(tokenizer.pre_tokenizer).__name__ == "ByteLevel":
            todo = [i for i, (n, room) in enumerate(zip(sizes, rooms, strict=True)) if n > room]
        else:
            todo = list(range(len(texts)))
        encodings = tokenizer.encode_batch([texts[i] for i in todo], add_special_tokens=False) if todo else []
    for i, e in zip(todo, encodings, strict=True):
        sizes[i] = len(e.ids)
    return sizes


def check_text_generate(s: Session, user: User, p: TextGenerateParams) -> dict:
    model = _model(s, user, p.model, ModelKind.CAUSAL_LM, "model")
    ctx = context_length(model)
    if p.max_new_tokens >= ctx:
        raise field_error("max_new_tokens", f"must be below the model's context of {ctx} tokens")
    if p.dataset_id:
        ds = _dataset(s, user, p.dataset_id, "text", "dataset_id")
        try:
            texts = [q.prompt for q in read_prompts(get_cache().file(ds.path, ds.sha256), ds.format)]
        except TextDataError as exc:
            raise field_error("dataset_id", str(exc)) from exc
        if not texts:
            raise field_error("dataset_id", "the dataset has no prompts")
    else:
        texts = [q if isinstance(q, str) else q.prompt for q in p.prompts or []]
    limit = get_settings().max_prompts
    if len(texts) > limit:
        raise field_error("prompts", f"{len(texts)} prompts is over the limit of {limit}")
    own = [None if isinstance(q, str) else q.max_new_tokens for q in p.prompts or []]
    over = [i for i, n in enumerate(own) if n is not None and n >= ctx]
    if over:
        raise Invalid(
            f"prompt {over[0]}: max_new_tokens must be below the model's context of {ctx} tokens",
            details=[
                {"loc": ["params", "prompts", i, "max_new_tokens"], "msg": "above the context"} for i in over[:20]
            ],
        )
    _check_prompt_lengths(model, texts, [ctx - (n or p.max_new_tokens) for n in own] or ctx - p.max_new_tokens)
    return {"model_id": model.id, "dataset_id": p.dataset_id, "total": len(texts) * 1}


def _check_prompt_lengths(model: Model, texts: list[str], room: int | list[int]) -> None:
    """Refuse prompts that do not fit the context with their ``max_new_tokens`` (``room``: one, or per prompt)."""
    rooms = room if isinstance(room, list) else [room] * len(texts)
    max_chars = get_settings().max_prompt_chars
    long_chars = [i for i, t in enumerate(texts) if len(t) > max_chars]
    if long_chars:
        raise field_error("prompts", f"prompt {long_chars[0]} is over {max_chars} characters")
    counts = _token_counts(model, texts, rooms)
    if counts is None:  # byte-level BPE: never more tokens than UTF-8 bytes, so short prompts surely fit
        counts = [len(t.encode()) if len(t.encode()) > r else 0 for t, r in zip(texts, rooms, strict=True)]
        too_long = [i for i, n in enumerate(counts) if n > 4 * rooms[i]]  # only certain overflows are refused here
    else:
        too_long = [i for i, n in enumerate(counts) if n > rooms[i]]
    if too_long:
        raise Invalid(
            f"{len(too_long)} prompt(s) do not fit the model's context with max_new_tokens (first: #{too_long[0]})",
            details=[
                {"loc": ["params", "prompts", i], "msg": "prompt too long for the context"} for i in too_long[:20]
            ],
        )


def check_text_train(s: Session, user: User, p: TextTrainParams) -> dict:
    ds = _dataset(s, user, p.dataset_id, "text", "dataset_id")
    if not ds.stats.get("documents"):
        raise field_error("dataset_id", "the dataset has no training text (a .jsonl needs a `text` field)")
    if p.validation_dataset_id:
        _dataset(s, user, p.validation_dataset_id, "text", "validation_dataset_id")
    base_id = None
    if p.base_model != "scratch":  # a scratch model is built with a context of at least block_size
        base = _model(s, user, p.base_model, ModelKind.CAUSAL_LM, "base_model")
        ctx, base_id = context_length(base), base.id
        if p.block_size > ctx:
            raise field_error("block_size", f"{p.block_size} is above the model's context of {ctx} tokens")
    if ds.stats.get("approx_tokens", 0) < p.block_size + 1 and ds.stats.get("chars", 0) < p.block_size + 1:
        raise field_error("dataset_id", f"the dataset is smaller than one block of {p.block_size} tokens")
    _name_free(s, p.name)
    return {"dataset_id": ds.id, "base_model_id": base_id, "total": p.max_steps or 0}


def _name_free(s: Session, name: str | None) -> None:
    if name and s.scalars(select(Model.id).where(Model.name == name)).first():
        raise field_error("name", f"a model named {name!r} already exists")


def check_gan_train(s: Session, user: User, p: GanTrainParams) -> dict:
    ds_id = None
    if p.dataset not in BUILTIN_SOURCES:
        ds_id = _dataset(s, user, p.dataset, "images", "dataset").id
    _name_free(s, p.name)
    return {"dataset_id": ds_id, "total": p.max_steps or 0}


def check_image_generate(s: Session, user: User, p: ImageGenerateParams) -> dict:
    model = _model(s, user, p.model, ModelKind.GAN_GENERATOR, "model")
    return {"model_id": model.id, "total": p.count}


def check_train_tagger(s: Session, user: User, p: TextTrainTaggerParams) -> dict:
    ds = _dataset(s, user, p.dataset_id, "tagged", "dataset_id")
    n_val = 0
    if p.validation_dataset_id:
        n_val = _dataset(s, user, p.validation_dataset_id, "tagged", "validation_dataset_id").stats.get("sentences", 0)
    if ds.stats.get("sentences", 0) + n_val < 2:
        raise field_error("dataset_id", "a tagger needs at least two sentences (one to train on, one to validate)")
    base_id = None
    if p.base_model != "scratch":
        base = _model(s, user, p.base_model, (ModelKind.TOKEN_CLASSIFIER, ModelKind.ENCODER), "base_model")
        base_id, ctx = base.id, context_length(base)
        if p.max_length > ctx:
            raise field_error("max_length", f"{p.max_length} is above the model's {ctx} positions")
    _name_free(s, p.name)
    return {"dataset_id": ds.id, "base_model_id": base_id, "total": p.max_steps or 0}


def check_tag(s: Session, user: User, p: TextTagParams) -> dict:
    model = _model(s, user, p.model, ModelKind.TOKEN_CLASSIFIER, "model")
    if p.dataset_id:
        ds = _dataset(s, user, p.dataset_id, "text", "dataset_id")
        if ds.format != "txt":
            raise field_error("dataset_id", "text.tag reads a .txt dataset: one text per line")
        n = ds.stats.get("prompts", 0)  # non-empty lines
        if not n:
            raise field_error("dataset_id", "the dataset has no lines to tag")
    else:
        n = len(p.texts or [])
    limit = get_settings().max_prompts
    if n > limit:
        raise field_error("texts", f"{n} texts is over the limit of {limit}")
    return {"model_id": model.id, "dataset_id": p.dataset_id, "total": n}


# Each kind names its check in the registry (shared/kinds.py); a kind whose check is missing fails at import.
CHECKS = {name: globals()[k.admission] for name, k in KINDS.items()}


def admit(s: Session, user: User, kind: str, params: BaseModel) -> dict:
    """Run the kind's checks; returns facts for the job row (``dataset_id``, ``total``, ...)."""
    return CHECKS[kind](s, user, params)


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
