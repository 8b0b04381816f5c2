"""The scorer seam of the pipeline: what it needs from a model bundle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import pandas as pd

from recsys.models.bundle import MemberScoring


class Scorer(Protocol):
    """A model as the pipeline uses it (:class:`recsys.models.bundle.ModelBundle` is one): the offer catalogue
    and a member's scoring view. Optional extras the pipeline looks for: ``for_vector`` with
    ``registered_as`` (stored member embeddings), ``similar_destinations``, ``context_ranker``."""

    @property
    def offers(self) -> pd.DataFrame: ...

    def for_member(
        self, member_id: str, member_features: Mapping[str, Any] | None = None
    ) -> MemberScoring: ...
