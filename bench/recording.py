"""Placeholder until the feature lands."""

from __future__ import annotations

from bench.context import Context
from bench.report import Section


def run(ctx: Context) -> Section:
    return Section("recording", skipped="the feature is not in this commit yet")
