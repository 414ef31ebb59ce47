"""The domain: working days, policy timescales, case lifecycle and reminder planning.

Nothing in this package touches the network, the database or the clock: callers pass time in,
so every rule can be tested with dates written out by hand.
"""
