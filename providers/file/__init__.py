"""The file provider: YAML files or a directory of them, watched for changes."""
