"""Pydantic schemas: one definition per request/params shape, used to validate input and to build OpenAPI."""
