"""The `billkeep` command line. Each module here that defines `register(app)` adds its commands."""
