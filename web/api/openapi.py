"""``GET /openapi.json``: generated from the same pydantic schemas that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.schemas import api as A
from shared.schemas.params import PARAMS_BY_KIND
from web.api import bp

REF = "#/components/schemas/{model}"
COMPONENTS: list[type[BaseModel]] = [
    A.JobCreate, A.JobOut, A.JobList, A.EventList, A.ResultOut, A.ArtifactList, A.ArtifactOut, A.ModelOut,
    A.ModelList, A.DatasetOut, A.DatasetList, A.Health, A.ErrorBody, *PARAMS_BY_KIND.values(),
]  # fmt: skip


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
    return {str(c): _json(A.ErrorBody, text[c]) for c in codes}  # fmt: skip


def _path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _job_create_schema(defs: dict) -> dict:
    """The envelope, with ``params`` described per kind (``oneOf`` the params schemas)."""
    schema = dict(defs["JobCreate"])
    schema["properties"] = dict(schema["properties"])
    schema["properties"]["params"] = {
        "description": "Params of the chosen kind: " + ", ".join(f"{k} → {m.__name__}" for k, m in
                                                                  PARAMS_BY_KIND.items()),
        "oneOf": [_ref(m) for m in PARAMS_BY_KIND.values()],
    }  # fmt: skip
    return schema


def _paths() -> dict:
    auth = _errors(401, 403)
    job = [_path_param("job_id")]
    list_q = [
        _query("status", {"type": "string"}),
        _query("kind", {"type": "string"}),
        _query("q", {"type": "string"}),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
        _query("cursor", {"type": "string"}),
    ]
    return {
        "/health": {"get": {"summary": "Health of db, broker, workers", "security": [],
                            "responses": {"200": _json(A.Health, "Healthy"), "503": _json(A.Health, "Degraded")}}},
        "/jobs": {
            "post": {"summary": "Submit a job", "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref(A.JobCreate)}}},
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
                "responses": {"201": _json(A.JobOut, "Created"), "200": _json(A.JobOut, "Existing (idempotent)"),
                              **_errors(413, 422), **auth}},
            "get": {"summary": "List jobs, newest first", "parameters": list_q,
                    "responses": {"200": _json(A.JobList, "Jobs"), **_errors(422), **auth}},
        },
        "/jobs/{job_id}": {"get": {"summary": "A job", "parameters": job,
                                   "responses": {"200": _json(A.JobOut, "Job"), **_errors(404), **auth}}},
        "/jobs/{job_id}/cancel": {"post": {"summary": "Cancel", "parameters": job, "responses": {
            "202": _json(A.JobOut, "Cancelling or cancelled"), **_errors(404, 409), **auth}}},
        "/jobs/{job_id}/retry": {"post": {"summary": "Re-run with the same params", "parameters": job, "responses": {
            "201": _json(A.JobOut, "New job"), **_errors(404, 422), **auth}}},
        "/jobs/{job_id}/events": {"get": {"summary": "Logs, metrics, status changes", "parameters": [
            *job, _query("after", {"type": "integer"}), _query("type", {"type": "string"}),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000})],
            "responses": {"200": _json(A.EventList, "Events"), **_errors(404, 422), **auth}}},
        "/jobs/{job_id}/results": {"get": {"summary": "Generation results by prompt index", "parameters": [
            *job, _query("format", {"type": "string", "enum": ["jsonl", "csv", "json"]}),
            _query("offset", {"type": "integer", "minimum": 0}), _query("limit", {"type": "integer", "minimum": 1})],
            "responses": {"200": {"description": "JSONL, CSV or JSON", "content": {
                "application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}}}}, **_errors(404, 422), **auth}}},
        "/jobs/{job_id}/artifacts": {"get": {"summary": "Artifacts of a job", "parameters": job, "responses": {
            "200": _json(A.ArtifactList, "Artifacts"), **_errors(404), **auth}}},
        "/artifacts/{artifact_id}": {"get": {"summary": "Download an artifact", "parameters": [
            _path_param("artifact_id")], "responses": {"200": {"description": "The file", "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(404), **auth}}},
        "/datasets": {
            "post": {"summary": "Upload a dataset", "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                    "file": {"type": "string", "format": "binary"}, "name": {"type": "string"}}}}}},
                "responses": {"201": _json(A.DatasetOut, "Created"), "200": _json(A.DatasetOut, "Already uploaded"),
                              **_errors(413, 422), **auth}},
            "get": {"summary": "List datasets", "responses": {"200": _json(A.DatasetList, "Datasets"), **auth}},
        },
        "/datasets/{dataset_id}": {"get": {"summary": "A dataset", "parameters": [_path_param("dataset_id")],
                                           "responses": {"200": _json(A.DatasetOut, "Dataset"), **_errors(404),
                                                         **auth}}},
        "/system": {"get": {"summary": "Health, workers seen (queues, device, last seen) and queue depths",
                            "responses": {"200": {"description": "System status", "content": {"application/json": {
                                "schema": {"type": "object"}}}}, **auth}}},
        "/models": {"get": {"summary": "The model registry", "responses": {"200": _json(A.ModelList, "Models"),
                                                                             **auth}}},
        "/models/{model_id}": {"get": {"summary": "A model", "parameters": [_path_param("model_id")],
                                       "responses": {"200": _json(A.ModelOut, "Model"), **_errors(404), **auth}}},
    }  # fmt: skip


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
        "paths": _paths(),
    }


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
