"""Frequency capping of offers per member (issue 5). The public interface is :mod:`recsys.capping.api`."""

from recsys.capping.api import (
    CapCandidate,
    CapDecision,
    CapEnforcer,
    CapMember,
    CapPolicy,
    CapState,
    PolicyError,
    PolicyHolder,
    Suppression,
    SuppressionCounters,
    build_enforcer,
    load_policy,
)

__all__ = [
    "CapCandidate",
    "CapDecision",
    "CapEnforcer",
    "CapMember",
    "CapPolicy",
    "CapState",
    "PolicyError",
    "PolicyHolder",
    "Suppression",
    "SuppressionCounters",
    "build_enforcer",
    "load_policy",
]
