"""pyantrea: Antrea v0.10's agent, controller, CNI and antctl on real Open vSwitch."""

__version__ = "0.1.0"
