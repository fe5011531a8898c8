"""Per-analyst and per-collaborator quotas on the gateway host: statements running
at once (lock files, gateway/quotas/slots.py), statements per minute and engine
seconds per hour (windows in SQLite or PostgreSQL, gateway/quotas/usage.py).
The pipeline's admit pass (gateway/engine/admit.py) asks gateway/quotas/service.py."""
