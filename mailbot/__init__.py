"""mailbot: turns a council's Care and Support Quality inbox into tracked cases."""

__version__ = "0.1.0"
