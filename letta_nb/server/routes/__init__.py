"""HTTP routes, one module per Letta resource."""
