"""Health checks (HTTP, command, Prometheus) that decide whether a deployment is done."""
