"""Adapters to the outside world: the database, mailboxes and outbound mail."""
