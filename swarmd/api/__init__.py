"""The HTTP API: one router per resource, one error handler, injected settings."""
