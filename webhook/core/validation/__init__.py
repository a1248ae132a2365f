"""Validation rules: pure functions from objects (and the Secrets they name) to field errors."""
