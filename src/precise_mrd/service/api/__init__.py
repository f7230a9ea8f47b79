"""The HTTP API: routers, schemas, dependencies and upload handling."""
