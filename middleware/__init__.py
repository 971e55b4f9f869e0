"""Middleware: the contract a middleware is written to, the registry, the built-ins."""
