"""`amqp://` and `amqps://`: RabbitMQ through pika, the only part of the project that imports it.

broker.py declares, publishes and consumes; connection.py keeps the connection serviced, by its callers and
an I/O thread, and reconnects; acks.py batches the acks of a consumed queue.
"""
from broker.rabbitmq.broker import RabbitBroker

__all__ = ["RabbitBroker"]
