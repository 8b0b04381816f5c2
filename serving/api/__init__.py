"""HTTP layer: schemas, dependencies and thin routers."""
