"""Configuration providers: sources of dynamic configuration snapshots."""
