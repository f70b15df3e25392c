"""
Dispatch: the L{EventDispatcher} facade over the handler book, admission,
the phase runner, the pool set and the stopper.
"""
