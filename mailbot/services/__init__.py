"""The service layer: use cases that load cases, apply domain rules and persist, in one transaction.

Entry points (CLI, worker, webhook) call these with a session they opened; every function here
leaves committing to the caller, so intake can store a message, its case and its outgoing mail
atomically.
"""
