"""A faiss inner-product index over item vectors (offers, destinations), saved with the model.

Exact search (``IndexFlatIP``) up to ``exact_max_items`` items — an offer catalogue of a few hundred items is
searched exhaustively in microseconds — and an approximate index above it: HNSW (default) or IVF. The model's
score is an inner product of member and item vectors, so the index returns exactly what the model would rank
when exact, and :func:`recall_at_k` says how close an approximate index comes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class IndexConfig(BaseModel):
    """How the index is built (strict: unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exact_max_items: int = Field(default=10_000, ge=0, description="exact IndexFlatIP up to this many items")
    approximate: Literal["hnsw", "ivf"] = "hnsw"
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=80, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=1)
    ivf_nlist: int | None = Field(default=None, ge=1, description="default: about 4·sqrt(n) lists")
    ivf_nprobe: int = Field(default=16, ge=1)
    seed: int = 42


class ItemIndex:
    """Ids and vectors of a set of items, searchable by inner product."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, index: faiss.Index, kind: str) -> None:
        self.ids = np.asarray(ids, dtype=object)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index = index
        self.kind = kind

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, config: IndexConfig | None = None) -> ItemIndex:
        """Index ``vectors`` (rows named by ``ids``): exact when small, HNSW or IVF above
        ``exact_max_items``."""
        cfg = config or IndexConfig()
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(ids) != len(x):
            raise ValueError(f"need one vector per id: {len(ids)} ids, vectors of shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("item vectors contain NaN or infinite values")
        n, d = x.shape
        if n <= cfg.exact_max_items:
            index: faiss.Index = faiss.IndexFlatIP(d)
            kind = "flat"
        elif cfg.approximate == "hnsw":
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.hnsw_ef_construction
            index.hnsw.efSearch = cfg.hnsw_ef_search
            kind = "hnsw"
        else:
            nlist = cfg.ivf_nlist or max(1, int(4 * np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, min(nlist, n), faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = cfg.seed
            index.train(x)
            index.nprobe = cfg.ivf_nprobe
            kind = "ivf"
        if n:
            index.add(x)
        return cls(ids, x, index, kind)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (ids, scores) per query row (2-D); missing slots (k > items found) are None / -inf."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.vectors.shape[1]}")
        k = min(k, len(self.ids))
        if k <= 0:
            return np.empty((len(q), 0), dtype=object), np.empty((len(q), 0), dtype=np.float32)
        raw_scores, idx = self.index.search(q, k)
        ids = self.ids[np.maximum(idx, 0)]
        ids[idx < 0] = None
        scores = np.where(idx >= 0, raw_scores, -np.inf).astype(np.float32)
        return ids, scores

    def search_rows(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (row positions, scores) of one query vector, without the rows faiss found none for (the
        per-request path: no id mapping, no padding)."""
        k = min(k, len(self.ids))
        if k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, idx = self.index.search(q, k)
        found = idx[0] >= 0
        return idx[0][found], scores[0][found]

    def search_positions(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Row positions (into ``ids``) of the top ``k`` per query (-1 where none)."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        return self.index.search(q, min(k, len(self.ids)))[1]

    def save(self, directory: Path | str, name: str) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / f"{name}.faiss"))
        np.save(directory / f"{name}.vectors.npy", self.vectors)
        (directory / f"{name}.json").write_text(
            json.dumps({"kind": self.kind, "ids": [str(i) for i in self.ids]})
        )

    @classmethod
    def load(cls, directory: Path | str, name: str) -> ItemIndex:
        directory = Path(directory)
        meta = json.loads((directory / f"{name}.json").read_text())
        index = faiss.read_index(str(directory / f"{name}.faiss"))
        vectors = np.load(directory / f"{name}.vectors.npy")
        if index.ntotal != len(meta["ids"]):
            raise ValueError(
                f"{directory}/{name}: index holds {index.ntotal} vectors but {len(meta['ids'])} ids"
            )
        return cls(np.asarray(meta["ids"], dtype=object), vectors, index, meta["kind"])


def recall_at_k(index: ItemIndex, queries: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-``k`` (brute-force inner product) that ``index`` returns, in [0, 1]."""
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = min(k, len(index))
    if k == 0 or len(q) == 0:
        return 1.0
    exact = faiss.IndexFlatIP(index.vectors.shape[1])
    exact.add(index.vectors)
    _, truth = exact.search(q, k)
    found = index.search_positions(q, k)
    hits = [len(set(t[t >= 0]) & set(f[f >= 0])) / k for t, f in zip(truth, found, strict=True)]
    return float(np.mean(hits))
