"""
The pure core: match specs, the handler registry, phases and their judgement,
invocations, results, errors, vetoes, sandbox profiles and option rules.

Nothing here imports the reactor, the wire or any pool.
"""
