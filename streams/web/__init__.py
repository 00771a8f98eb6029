"""What is served over HTTP: the endpoints (server), the dashboard, Prometheus metrics and
the analysts' SQL client (query)."""
