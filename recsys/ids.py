"""One frozen map between external ids (member ids, offer/item ids) and matrix indices.

External ids are mapped at the edge, in the public methods of models and in the pipeline, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class IdMap:
    """Bijective map external id <-> dense index ``0..n-1``, in the order the ids were given."""

    external_ids: np.ndarray
    _index: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.external_ids, dtype=object)
        # An object-dtype index: with pandas' arrow-backed "str" dtype every lookup would convert it first.
        index = pd.Index(ids, dtype=object)
        if not index.is_unique:
            dup = index[index.duplicated()][:5].tolist()
            raise ValueError(f"IdMap: duplicated external ids {dup}")
        object.__setattr__(self, "external_ids", ids)
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_values(cls, values: Iterable[object]) -> IdMap:
        """Unique values in order of first appearance."""
        return cls(pd.unique(pd.Series(list(values) if not isinstance(values, pd.Series) else values)))

    @property
    def size(self) -> int:
        return len(self.external_ids)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._index

    def to_index(
        self, ids: Sequence[object] | np.ndarray | pd.Series, missing: int | None = None
    ) -> np.ndarray:
        """Indices of ``ids``. Unknown ids raise ``KeyError`` unless ``missing`` gives the index for them.

        Ids are factorised first and only the distinct ones looked up, so long columns with repeated ids (a
        member's many flights) cost one hash pass.
        """
        codes, uniques = pd.factorize(pd.Series(ids) if not isinstance(ids, pd.Series) else ids)
        found = self._index.get_indexer(pd.Index(np.asarray(uniques, dtype=object), dtype=object))
        idx = np.where(codes >= 0, found[np.maximum(codes, 0)], -1).astype(np.int64)
        unknown = idx < 0
        if unknown.any():
            if missing is None:
                raise KeyError(f"unknown ids: {list(np.asarray(ids, dtype=object)[unknown][:5])}")
            idx[unknown] = missing
        return idx

    def index_of(self, external_id: object) -> int | None:
        """Index of one id, or None if it is unknown."""
        try:
            loc = self._index.get_loc(external_id)
        except (KeyError, TypeError):
            return None
        return int(loc) if isinstance(loc, int | np.integer) else None

    def to_external(self, idx: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.external_ids[np.asarray(idx, dtype=np.int64)]

    def add(self, new_ids: Iterable[object]) -> IdMap:
        """A new map with unseen ids appended (existing indices unchanged)."""
        extra = [i for i in pd.unique(pd.Series(list(new_ids))) if i not in self._index]
        return IdMap(np.concatenate([self.external_ids, np.asarray(extra, dtype=object)]))


def row_ids(path: Path | str, rows: Iterable[int]) -> list[str]:
    """Ids of the rows of a source file that has no id column (the cleaned air-data ``data_selected.csv``):
    ``<file stem>-<1-based data row, 6 digits>``, the stem's characters other than letters, digits and ``_``
    replaced by ``_`` (row 1 of ``data_selected.csv`` is ``data_selected-000001``). The one rule whether the
    file is imported (``recsys data import --format air-data``) or read directly (``recsys segment --data
    file.csv``), so a member has the same id both ways."""
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(path).stem)
    return [f"{stem}-{int(r):06d}" for r in rows]
