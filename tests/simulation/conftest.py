"""The service fixtures (small world, trained champion in a throw-away registry, Redis prefixes) are shared
with tests/serving."""

from tests.serving.conftest import (  # noqa: F401  (fixtures, found by name)
    _drop_session_members,
    module_prefix,
    redis_prefix,
    registry,
    serving_world,
)
