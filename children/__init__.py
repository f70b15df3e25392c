"""
The child side of actordispatch: the code that runs inside the pool's child
processes.  Nothing here imports the dispatcher; the two sides share only the AMP
commands, the codec and the error types.
"""
