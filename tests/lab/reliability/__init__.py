"""The reliability suite (issue 5): restarts, SpoofGuard, the APIs' surface, churn, on one live lab."""
