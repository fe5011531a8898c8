"""Differential privacy: OpenDP mechanisms, the budget ledger and the release cache."""
