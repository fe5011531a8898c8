"""The resolved-plan layer: statements bound by scope to declared columns, typed,
and regenerated as SQL from that binding alone (gateway.plan.resolve), the
privacy units and roles both the k rewrite and DP bounding read
(gateway.plan.units), and the independent check of the SQL that runs
(gateway.plan.verify).

This layer imports only gateway.errors and gateway.policy; the engine and the
differential-privacy packages import it, never the other way round.
"""
