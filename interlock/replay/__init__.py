"""Replay recorded incidents offline: bundles, request matching, divergence diffs, the replay server,
and re-running recorded requests against a live upstream."""

from interlock.replay.bundle import Bundle, BundleError, bundle_from_calls, open_bundle
from interlock.replay.diff import Difference, Divergence
from interlock.replay.match import Matcher, MatchOptions
from interlock.replay.server import ReplayApp, Summary

__all__ = [
    "Bundle",
    "BundleError",
    "Difference",
    "Divergence",
    "Matcher",
    "MatchOptions",
    "ReplayApp",
    "Summary",
    "bundle_from_calls",
    "open_bundle",
]
