"""Candidate retrieval: a faiss inner-product index over item vectors."""

from recsys.retrieval.index import IndexConfig, ItemIndex, recall_at_k

__all__ = ["IndexConfig", "ItemIndex", "recall_at_k"]
