"""Recommender models behind one interface, and the served artefact.

* :mod:`recsys.models.base` — :class:`~recsys.models.base.Recommender` (fit / recommend / save by
  external ids, cold-start policy, one top-k), :class:`~recsys.models.base.RecDataset`.
* :mod:`recsys.models.popularity`, :mod:`~recsys.models.als`, :mod:`~recsys.models.bpr`,
  :mod:`~recsys.models.lightfm_model`, :mod:`~recsys.models.hybrid` — the five kinds, each with a strict
  config.
* :mod:`recsys.models.registry` — kinds by name: ``create_model(kind, config)``, ``config_class(kind)``,
  ``load_model(path)``.
* :mod:`recsys.models.features` — member and item feature matrices (same names offline and online).
* :mod:`recsys.models.bundle` — :class:`~recsys.models.bundle.ModelBundle`, what MLflow wraps and the
  service loads.
"""
