"""
The local pool: ampoule children on this machine, supervised, fed in batches,
settled from what the parent observed.
"""
