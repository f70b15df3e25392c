"""
The wire: the event codec, the AMP commands between parent and child, outcome
JSON, the guarded AMP protocol and the result-spool pipes.

Shared by the parent and the child side; nothing here imports the reactor.
"""
