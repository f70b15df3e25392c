"""
Scale-out over RabbitMQ: the broker link, the wire, the routed pool and the
worker host.  Imported only when used (it needs pika).
"""
