"""Carrying releases through environments: publishing, deploying, checking, rolling back."""
