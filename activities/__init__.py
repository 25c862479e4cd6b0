"""swarmd.activities (this folder is mapped to that package in pyproject.toml)."""
