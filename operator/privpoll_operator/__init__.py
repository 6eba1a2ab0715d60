"""The privpoll Kubernetes operator: Poll resources reconciled by kopf."""
