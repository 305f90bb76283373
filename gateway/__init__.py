"""The gateway: gRPC in front of the core, and the durable ledger behind it.

``app.py`` is the one execution path every mutating request takes;
``reads.py`` what the services read of the store; then one package per
concern: ``transport/`` (server, services, translation), ``store/`` (the
ledger's parts, group commit, proofs, snapshots; ``sqlite/`` the backend),
``security/`` (identity, admission, bounds, privacy, audit, certificates),
``operations/`` (metrics, GC watch, health, watchdog, logs) and ``cli/``
(``yidi``).  docs/design.md ("Layout") draws them.
"""
