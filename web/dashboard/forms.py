"""Submit forms generated from the params' pydantic JSON schemas, so the forms follow the API as it changes.

Each schema property becomes a :class:`FormField`; a few get a better widget (models and datasets as selects, the
prompts as a text box plus a file). Parsing turns the posted strings back into JSON values and leaves validation to
the same code the API runs, whose errors are then shown next to the fields they name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.kinds import KINDS, PARAMS_BY_KIND
from shared.schemas.api import JobCreate

MAIN_FIELDS = {name: list(k.form_fields) for name, k in KINDS.items()}  # the rest fold into "Advanced"
LABELS = {
    "top_k": "Top-k",
    "top_p": "Top-p (nucleus)",
    "num_return_sequences": "Sequences per prompt",
    "n_layer": "Layers",
    "n_head": "Attention heads",
    "n_embd": "Embedding size",
    "dataset_id": "Dataset",
    "validation_dataset_id": "Validation dataset",
    "grad_accum_steps": "Gradient accumulation steps",
    "max_attempts": "Max attempts",
    "timeout_seconds": "Time limit (seconds)",
    "grid": "Also save a grid image",
    "stop": "Stop strings",
    "count": "Number of images",
    "dataset": "Dataset",
    "name": "Model name",
    "beta1": "Adam β1",
    "beta2": "Adam β2",
    "latent_dim": "Latent size",
    "size": "Size preset",
}
HELP = {
    ("text.generate", "prompts"): "One prompt per line.",
    ("text.generate", "stop"): "One per line; the text is cut before the first one.",
    ("text.generate", "dataset_id"): "A prompt file uploaded before, instead of the prompts box.",
    ("text.train", "max_steps"): "200 when Epochs is empty.",
    ("text.train", "size"): "For new models: tiny when empty.",
    ("image.train_gan", "max_steps"): "500 when Epochs is empty.",
    ("text.train", "name"): "Registry name of the trained model (optional, unique).",
    ("image.train_gan", "name"): "Registry name of the trained generator (optional, unique).",
    ("text.train_tagger", "dataset_id"): "CoNLL (token … tag per line) or JSONL {tokens, tags}, uploaded before.",
    ("text.train_tagger", "max_steps"): "300 when Epochs is empty.",
    ("text.train_tagger", "name"): "Registry name of the trained tagger (optional, unique).",
    ("text.tag", "texts"): "One text per line.",
    ("text.tag", "dataset_id"): "A .txt file uploaded before (one text per line), instead of the texts box.",
}
# Which selects list registry models / datasets, and what they offer besides.
CHOICES = {
    ("text.generate", "model"): ("lm_models", [], None),
    ("text.generate", "dataset_id"): ("text_datasets", [], "— none: use the prompts box —"),
    ("text.train", "base_model"): ("lm_models", [("scratch", "scratch (a new model)")], None),
    ("text.train", "dataset_id"): ("text_datasets", [], "— choose a text dataset —"),
    ("text.train", "validation_dataset_id"): ("text_datasets", [], "— none: hold out a fraction —"),
    ("image.train_gan", "dataset"): (
        "image_datasets",
        [("digits", "digits (built in, 8×8 scaled)"), ("mnist", "MNIST (downloads when online)")],
        None,
    ),
    ("image.generate", "model"): ("gan_models", [], "— choose a generator —"),
    ("text.train_tagger", "base_model"): ("tagger_bases", [("scratch", "scratch (a new encoder)")], None),
    ("text.train_tagger", "dataset_id"): ("tagged_datasets", [], "— choose a tagged dataset —"),
    ("text.train_tagger", "validation_dataset_id"): ("tagged_datasets", [], "— none: hold out a fraction —"),
    ("text.tag", "model"): ("taggers", [], "— choose a tagger —"),
    ("text.tag", "dataset_id"): ("text_datasets", [], "— none: use the texts box —"),
}
ENVELOPE = ("priority", "queue", "metadata", "webhook_url")


@dataclass
class FormField:
    name: str
    label: str
    widget: str  # number | text | select | checkbox | prompts | lines
    value_type: str = "string"  # integer | number | string | boolean | array
    help: str = ""
    required: bool = False
    nullable: bool = False
    default: Any = None
    min: Any = None
    max: Any = None
    maxlength: int | None = None
    pattern: str | None = None
    options: list[tuple[str, str]] = field(default_factory=list)
    advanced: bool = False
    wide: bool = False  # model and dataset selects: their option labels are long
    value: str = ""
    checked: bool = False
    error: str | None = None

    @property
    def id(self) -> str:
        return f"f-{self.name}"

    @property
    def step(self) -> str:
        return "1" if self.value_type == "integer" else "any"


def _label(name: str, prop: dict) -> str:
    return LABELS.get(name) or (prop.get("title") or name.replace("_", " ")).capitalize()


def _core(prop: dict) -> tuple[dict, bool]:
    """The non-null branch of ``X | None``, and whether null is allowed."""
    branches = prop.get("anyOf")
    if not branches:
        return prop, False
    non_null = [b for b in branches if b.get("type") != "null"]
    return (non_null[0] if len(non_null) == 1 else {"type": "string"}), len(non_null) < len(branches)


def _field(kind: str, name: str, prop: dict, required: bool, choices: dict[str, list[tuple[str, str]]]) -> FormField:
    core, nullable = _core(prop)
    vtype = core.get("type", "string")
    f = FormField(
        name=name,
        label=_label(name, prop),
        widget="text",
        value_type=vtype,
        required=required,
        nullable=nullable,
        default=prop.get("default"),
        help=HELP.get((kind, name)) or prop.get("description", ""),
        maxlength=core.get("maxLength"),
        pattern=core.get("pattern"),
    )
    if (kind, name) in CHOICES:
        source, extra, blank = CHOICES[(kind, name)]
        f.widget, f.options = "select", ([("", blank)] if blank else []) + extra + choices.get(source, [])
        f.help, f.wide = HELP.get((kind, name), ""), True
    elif "enum" in core:
        f.widget = "select"
        f.options = ([("", "— default —")] if nullable else []) + [(str(v), str(v)) for v in core["enum"]]
    elif vtype in ("integer", "number"):
        f.widget, f.min, f.max = "number", core.get("minimum"), core.get("maximum")
    elif vtype == "boolean":
        f.widget = "checkbox"
    elif vtype == "array":
        f.widget = "prompts" if name == "prompts" else "lines"
    elif vtype == "object":  # metadata: one key=value per line
        f.widget, f.value_type, f.help = "lines", "object", "One key=value per line (up to 16)."
    return f


def build_fields(kind: str, choices: dict[str, list[tuple[str, str]]]) -> list[FormField]:
    """The kind's params fields (main ones first, in the order above), then the job envelope's, all advanced."""
    schema = PARAMS_BY_KIND[kind].model_json_schema()
    required = set(schema.get("required", []))
    fields = {n: _field(kind, n, p, n in required, choices) for n, p in schema["properties"].items()}
    main = [fields[n] for n in MAIN_FIELDS[kind] if n in fields]
    rest = [f for n, f in fields.items() if n not in MAIN_FIELDS[kind]]
    envelope = JobCreate.model_json_schema()["properties"]
    extra = [_field(kind, n, envelope[n], False, choices) for n in ENVELOPE]
    for f in rest + extra:
        f.advanced = True
    return main + rest + extra


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # metadata
        return "\n".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return "\n".join(v if isinstance(v, str) else str(v.get("prompt", "")) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fill(fields: list[FormField], values: dict[str, Any], posted: bool = False) -> None:
    """Set each field's shown value: posted strings as they came, otherwise the given values, else defaults."""
    for f in fields:
        if posted:
            raw = values.get(f.name)
            f.checked = raw is not None if f.widget == "checkbox" else False
            f.value = raw or ""
        else:
            value = values.get(f.name, f.default)
            f.checked = bool(value) if f.widget == "checkbox" else False
            f.value = _display(value)
        if f.widget == "select" and f.value and f.value not in {v for v, _ in f.options}:
            f.options.append((f.value, f.value))  # keep a value we don't list (a model by id, a removed dataset)


def _coerce(raw: str, vtype: str) -> Any:
    """Strings to JSON numbers where they parse; otherwise the string, for the schema to reject with a message."""
    try:
        if vtype == "integer":
            number = float(raw)
            return int(number) if number.is_integer() else raw
        if vtype == "number":
            return float(raw)
    except ValueError:
        return raw
    return raw


def parse(fields: list[FormField], form) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, envelope) from posted form values; empty inputs are left out so the schema defaults apply."""
    params: dict[str, Any] = {}
    envelope: dict[str, Any] = {}
    for f in fields:
        target = envelope if f.name in ENVELOPE else params
        raw = form.get(f.name)
        if f.widget == "checkbox":
            target[f.name] = raw is not None
            continue
        if raw is None or not raw.strip():
            continue
        if f.value_type == "object":  # key=value lines; a line without "=" is left for the schema to reject
            pairs = [line.strip().partition("=") for line in raw.split("\n") if line.strip()]
            target[f.name] = {k.strip(): v.strip() for k, sep, v in pairs} if all(p[1] for p in pairs) else raw
        elif f.widget in ("prompts", "lines"):
            lines = [line.rstrip("\r") for line in raw.split("\n")]
            target[f.name] = [line for line in lines if line.strip()]
        elif f.widget == "select" and f.value_type == "integer":
            target[f.name] = _coerce(raw, "integer")
        else:
            target[f.name] = _coerce(raw.strip(), f.value_type)
    return params, envelope


def clean_message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def place_errors(fields: list[FormField], details: list[dict] | None, message: str) -> list[str]:
    """Attach each error to the field its ``loc`` names; returns the ones that belong to no field."""
    by_name = {f.name: f for f in fields}
    general: list[str] = []
    for d in details or []:
        loc = [str(x) for x in d.get("loc", [])]
        name = loc[1] if len(loc) > 1 and loc[0] == "params" else (loc[0] if loc else "")
        msg = clean_message(str(d.get("msg", "")))
        if name == "prompts" and len(loc) > 2:
            msg = f"prompt {loc[2]}: {msg}"
        target = by_name.get(name)
        if target is None:
            general.append(msg)
        elif target.error is None:
            target.error = msg
        else:
            target.error += f"; {msg}"
    if not details:
        general.append(message)
    return general
