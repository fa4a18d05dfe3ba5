"""AntreaProxy: Services served by OVS select groups and conntrack DNAT (the `AntreaProxy` gate)."""
