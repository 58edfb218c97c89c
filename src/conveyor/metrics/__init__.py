"""Measurement: the five DORA metrics and flow figures from the release record, tiers, and the
Prometheus exposition."""
