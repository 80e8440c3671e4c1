"""Errors shared by more than one domain module (kept here so neither imports the other)."""

from __future__ import annotations


class PolicyError(ValueError):
    """A policy rejected by validation (or the maps refused it)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def policy_maps_missing(message: str) -> PolicyError:
    """The error a policy map access raises when the data path is not attached."""
    return PolicyError("policy", message)
