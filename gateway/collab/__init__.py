"""Multi-party collaboration: template approvals bound to a canonical hash,
outputs for named receivers, the audit commands, policy tests and reloads.

A clean room is several organisations that do not trust each other: nothing
shared runs unless every owner of every table it touches approved exactly
this version of it.
"""
