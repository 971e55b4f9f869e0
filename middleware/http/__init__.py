"""Built-in HTTP middlewares, one module per Traefik middleware (or family)."""
