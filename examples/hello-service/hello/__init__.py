"""A tiny web service for the sample pipeline: a greeting and a health endpoint."""
