"""
The service: TOML configuration, the C{twistd} service and plugin, Prometheus
metrics and the command line.
"""
