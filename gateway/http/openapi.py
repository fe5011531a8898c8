"""The OpenAPI document of the HTTP API (openapi.yaml, served as JSON at /v1/openapi.json)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def openapi_document() -> dict:
    text = resources.files("gateway.http").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)
