"""Set-up, generation and measurement scripts (run from the repository root: python -m scripts.NAME; shell scripts with bash)."""
