"""``GET /openapi.json``: generated from the same pydantic schemas that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, get_args

from flask import jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.kinds import PARAMS_BY_KIND
from shared.models import ModelKind
from shared.schemas import api as A
from web.api import bp

REF = "#/components/schemas/{model}"
COMPONENTS: list[type[BaseModel]] = [
    A.JobCreate,
    A.JobOut,
    A.JobList,
    A.EventList,
    A.ResultOut,
    A.ArtifactList,
    A.ArtifactOut,
    A.ModelOut,
    A.ModelList,
    A.DatasetOut,
    A.DatasetList,
    A.Health,
    A.ErrorBody,
    A.DemoRequest,
    A.DemoOut,
    A.FollowupRequest,
    A.JobDeleted,
    A.Deleted,
    A.MetricsOut,
    *PARAMS_BY_KIND.values(),
    A.WebhookSecret,
    A.WebhookSettings,
    A.WebhookDeliveryList,
]


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": REF.format(model=model.__name__)}


def _json(model: type[BaseModel] | None, description: str) -> dict:
    resp: dict[str, Any] = {"description": description}
    if model is not None:
        resp["content"] = {"application/json": {"schema": _ref(model)}}
    return resp


def _errors(*codes: int) -> dict:
    text = {
        400: "Bad request",
        401: "Missing or unknown token",
        403: "Revoked token",
        404: "Not found",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid input",
        429: "Rate limited",
        503: "Unavailable",
    }
    return {str(c): _json(A.ErrorBody, text[c]) for c in codes}


# Text the database cannot store (NUL) never matches anything: such a path is a 404, such a query value a 422.
NO_NUL = "^[^\\u0000]*$"
STATUS_LIST = "^({s})(,({s}))*$".format(s="|".join(get_args(A.Status)))
MAX_INT = 2**63 - 1  # Postgres bigint


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": NO_NUL}}


def _query(name: str, schema: dict, description: str = "") -> dict:
    if schema.get("type") == "string" and "enum" not in schema:
        schema = {"pattern": NO_NUL, **schema}
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _int_query(name: str, minimum: int, maximum: int = MAX_INT, description: str = "") -> dict:
    return _query(name, {"type": "integer", "minimum": minimum, "maximum": maximum}, description)


def _job_create_schema(defs: dict) -> dict:
    """The envelope once per kind: ``kind`` fixes which params schema ``params`` must match (``oneOf`` by kind)."""
    envelope = defs["JobCreate"]
    variants = []
    for kind, model in PARAMS_BY_KIND.items():
        props = dict(envelope["properties"])
        props["kind"] = {"type": "string", "const": kind}
        props["params"] = {**_ref(model), "description": f"{model.__name__}; omitted: all defaults."}
        needs_params = bool(model.model_json_schema().get("required"))
        variants.append(
            {
                "type": "object",
                "title": f"JobCreate[{kind}]",
                "properties": props,
                "required": ["kind", "params"] if needs_params else ["kind"],
                "additionalProperties": False,
            }
        )
    return {"title": "JobCreate", "description": envelope.get("description", ""), "oneOf": variants}


def _paths() -> dict:
    auth = _errors(401, 403)
    job = [_path_param("job_id")]
    list_q = [
        _query("status", {"type": "string", "pattern": STATUS_LIST}, "Comma-separated statuses."),
        _query("kind", {"type": "string"}),
        _query("q", {"type": "string"}, "Search in kind, model, dataset, name and the first prompts."),
        _int_query("limit", 1, 200),
        _query("cursor", {"type": "string"}, "`next_cursor` of the previous page."),
    ]
    return {
        "/openapi.json": {
            "get": {
                "summary": "This document (OpenAPI 3.1); browsable at /api/docs",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/health": {
            "get": {
                "summary": "Health of db, broker, workers",
                "security": [],
                "responses": {"200": _json(A.Health, "Healthy"), "503": _json(A.Health, "Degraded")},
            }
        },
        "/jobs": {
            "post": {
                "summary": "Submit a job",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(A.JobCreate)}}},
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NO_NUL},
                    }
                ],
                "responses": {
                    "201": _json(A.JobOut, "Created"),
                    "200": _json(A.JobOut, "Existing (idempotent)"),
                    **_errors(413, 422, 429),
                    **auth,
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "description": "Also `metadata.KEY=VALUE` (any number, AND-ed): jobs whose metadata has them.",
                "parameters": list_q,
                "responses": {"200": _json(A.JobList, "Jobs"), **_errors(422), **auth},
            },
        },
        "/jobs/{job_id}": {
            "get": {
                "summary": "A job",
                "parameters": job,
                "responses": {"200": _json(A.JobOut, "Job"), **_errors(404), **auth},
            },
            "delete": {
                "summary": "Delete a finished job: its results, events and stored artifacts",
                "parameters": [
                    *job,
                    _query(
                        "with_model",
                        {"type": "string", "enum": ["true", "false", "1", "0"]},
                        "true: also delete the registry model the job trained",
                    ),
                ],
                "responses": {"200": _json(A.JobDeleted, "Deleted"), **_errors(404, 409, 422), **auth},
            },
        },
        "/jobs/{job_id}/metrics": {
            "get": {
                "summary": "Metric series by step, min/max-downsampled for long runs",
                "parameters": [*job, _int_query("points", 10, 20_000, "About how many points per series.")],
                "responses": {"200": _json(A.MetricsOut, "Series"), **_errors(404, 422), **auth},
            }
        },
        "/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel",
                "parameters": job,
                "responses": {"202": _json(A.JobOut, "Cancelling or cancelled"), **_errors(404, 409), **auth},
            }
        },
        "/jobs/{job_id}/retry": {
            "post": {
                "summary": "Re-run with the same params",
                "parameters": job,
                "responses": {"201": _json(A.JobOut, "New job"), **_errors(404, 422, 429), **auth},
            }
        },
        "/jobs/{job_id}/events": {
            "get": {
                "summary": "Logs, metrics, status changes",
                "parameters": [
                    *job,
                    _int_query("after", 0, description="`next_after` of the previous page."),
                    _query("type", {"type": "string"}, "Comma-separated: log, metric, status."),
                    _int_query("limit", 1, 5000),
                ],
                "responses": {"200": _json(A.EventList, "Events"), **_errors(404, 422), **auth},
            }
        },
        "/jobs/{job_id}/results": {
            "get": {
                "summary": "Generation results by prompt index",
                "parameters": [
                    *job,
                    _query(
                        "format",
                        {"type": "string", "enum": ["jsonl", "csv", "json", "zip"]},
                        "zip: results.jsonl and provenance.json",
                    ),
                    _int_query("offset", 0),
                    _int_query("limit", 1),
                ],
                "responses": {
                    "200": {
                        "description": "JSONL, CSV or JSON",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/json": {"schema": {"type": "object"}},
                            "application/zip": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **_errors(404, 422),
                    **auth,
                },
            }
        },
        "/jobs/{job_id}/artifacts": {
            "get": {
                "summary": "Artifacts of a job",
                "parameters": [
                    *job,
                    _query("role", {"type": "string"}, "Only this role: sample, image, grid, archive, output."),
                ],
                "responses": {"200": _json(A.ArtifactList, "Artifacts"), **_errors(404, 422), **auth},
            }
        },
        "/artifacts/{artifact_id}": {
            "get": {
                "summary": "Download an artifact",
                "parameters": [
                    _path_param("artifact_id"),
                    _query(
                        "inline",
                        {"type": "string", "enum": ["0", "1"]},
                        "1: images inline rather than as an attachment",
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "The file, with its own content type",
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(404, 422),
                    **auth,
                },
            }
        },
        "/datasets": {
            "post": {
                "summary": "Upload a dataset",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "name": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(A.DatasetOut, "Created"),
                    "200": _json(A.DatasetOut, "Already uploaded"),
                    **_errors(413, 422, 429),
                    **auth,
                },
            },
            "get": {
                "summary": "List datasets",
                "parameters": [_query("kind", {"type": "string", "enum": list(get_args(A.DatasetKind))})],
                "responses": {"200": _json(A.DatasetList, "Datasets"), **_errors(422), **auth},
            },
        },
        "/datasets/{dataset_id}": {
            "get": {
                "summary": "A dataset",
                "parameters": [_path_param("dataset_id")],
                "responses": {"200": _json(A.DatasetOut, "Dataset"), **_errors(404), **auth},
            },
            "delete": {
                "summary": "Delete a dataset no queued or running job uses",
                "parameters": [_path_param("dataset_id")],
                "responses": {"200": _json(A.Deleted, "Deleted"), **_errors(404, 409), **auth},
            },
        },
        "/system": {
            "get": {
                "summary": "Health, workers seen (queues, device, last seen) and queue depths",
                "responses": {
                    "200": {
                        "description": "System status",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **auth,
                },
            }
        },
        "/demo": {
            "post": {
                "summary": "First-run demo: a corpus from stdlib docstrings, GPT-2 and DCGAN training",
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref(A.DemoRequest)}}},
                "responses": {
                    "201": _json(A.DemoOut, "Dataset and the two training jobs"),
                    **_errors(422, 429),
                    **auth,
                },
            }
        },
        "/demo/followup": {
            "post": {
                "summary": "The generation job for a succeeded demo training job (idempotent)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(A.FollowupRequest)}}},
                "responses": {
                    "201": _json(A.JobOut, "Queued"),
                    "200": _json(A.JobOut, "Queued before"),
                    **_errors(404, 409, 422, 429),
                    **auth,
                },
            }
        },
        "/models": {
            "get": {
                "summary": "The model registry",
                "parameters": [_query("kind", {"type": "string", "enum": list(ModelKind.ALL)})],
                "responses": {"200": _json(A.ModelList, "Models"), **_errors(422), **auth},
            }
        },
        "/models/{model_id}": {
            "get": {
                "summary": "A model (by id or name)",
                "parameters": [_path_param("model_id")],
                "responses": {"200": _json(A.ModelOut, "Model"), **_errors(404), **auth},
            }
        },
        "/models/{model_id}/download": {
            "get": {
                "summary": "A tar of the model's directory (safetensors + configs) that from_pretrained opens as is",
                "parameters": [_path_param("model_id")],
                "responses": {
                    "200": {
                        "description": "application/x-tar",
                        "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(404, 409),
                    **auth,
                },
            }
        },
    }


def _webhook_paths() -> dict:
    """The webhook endpoints (``web/api/webhooks.py``)."""
    auth, job = _errors(401, 403), [_path_param("job_id")]
    secret = {"200": _json(A.WebhookSecret, "The secret"), **auth}
    settings = {"200": _json(A.WebhookSettings, "Webhook settings"), **auth}
    return {
        "/webhooks/secret": {
            "get": {"summary": "Your webhook signing secret (whsec_…), made on first use", "responses": secret},
            "post": {"summary": "Rotate your webhook signing secret", "responses": secret},
        },
        "/webhooks/settings": {
            "get": {"summary": "Your default webhook URL", "responses": settings},
            "put": {
                "summary": "Set or clear your default webhook URL",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(A.WebhookSettings)}}},
                "responses": {**settings, **_errors(422)},
            },
        },
        "/jobs/{job_id}/webhooks": {
            "get": {
                "summary": "Webhook deliveries of a job, each with its attempts",
                "parameters": job,
                "responses": {"200": _json(A.WebhookDeliveryList, "Deliveries"), **_errors(404), **auth},
            }
        },
    }


@lru_cache(maxsize=1)
def document() -> dict:
    _, top = models_json_schema([(m, "validation") for m in COMPONENTS], ref_template=REF)
    defs = dict(top.get("$defs", {}))
    defs["JobCreate"] = _job_create_schema(defs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "genqueue", "version": "1", "description": "Async jobs for AI-generated content."},
        "servers": [{"url": "/api/v1"}],
        "components": {"schemas": defs, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {**_paths(), **_webhook_paths()},
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
