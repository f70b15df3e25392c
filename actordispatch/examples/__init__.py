"""
Built-in examples: handlers and events that the demo and the docs use.  They are
ordinary modules, so child processes can import them.
"""
