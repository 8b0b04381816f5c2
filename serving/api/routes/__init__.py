"""Thin routers: parse, call a plain function, answer."""
