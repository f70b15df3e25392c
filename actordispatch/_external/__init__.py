"""
The AMP endpoint: external processes that fire events, register handlers and
answer invocations over AMP.
"""
