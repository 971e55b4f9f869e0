"""The HTTP data path: server protocol, router table, upstream pools, proxying, TLS."""
