"""Features shared by training and serving: member profiles, LRFMC customer value, offer features.

* :mod:`recsys.features.profiles` - :func:`build_member_profiles` (batch) and :func:`profile_for_member`
  (online), one row per member, columns :class:`ProfileCol`.
* :mod:`recsys.features.lrfmc` - L, R, F, M, C from flights or from the ``member_aggregates`` table, and the
  textbook cleaning of the real customer-value data.
* :mod:`recsys.features.segmentation` - LRFMC customer-value segments (k-means, named clusters).
* :mod:`recsys.features.flyers` - the members and flights tables as profiles and segments read them.
* :mod:`recsys.features.offers` - :func:`build_offer_features`: family, category, cabin, region, price bands.

Import from the submodules (this package imports nothing itself).
"""
