"""The JSON API, dashboard and metrics endpoint."""
