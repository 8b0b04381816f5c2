"""Online stores the service reads per request (the member store: profiles, embeddings, per-trip state)."""

from recsys.stores.member_store import (
    EmbeddedMemberStore,
    MemberRecord,
    MemberStore,
    PublishReport,
    RedisMemberStore,
    build_member_store,
    model_version_prefix,
    publish_profiles,
)

__all__ = [
    "EmbeddedMemberStore",
    "MemberRecord",
    "MemberStore",
    "PublishReport",
    "RedisMemberStore",
    "build_member_store",
    "model_version_prefix",
    "publish_profiles",
]
