"""The RabbitMQ backend's ack batching: one multiple ack covers exactly the settled prefix."""
from broker.rabbitmq.acks import AckBatch


def test_a_multiple_ack_covers_only_tags_below_the_oldest_unsettled_one():
    batch = AckBatch(size=4, wait=0.2)
    for tag in (1, 2, 3, 4):
        batch.take((1, tag))
    assert not batch.settle((1, 1))
    assert not batch.settle((1, 2))
    assert not batch.settle((1, 4))  # 3 is still being handled
    assert batch.due(1) == (2, [4])  # 1 and 2 at once; 4 on its own, never by a multiple ack over 3
    assert batch.due(1) == (None, [])
    assert not batch.settle((1, 3))
    assert batch.due(1) == (3, [])


def test_a_full_batch_asks_to_be_sent_and_other_epochs_are_dropped():
    batch = AckBatch(size=2, wait=0.2)
    batch.take((1, 7))
    batch.take((2, 1))
    assert not batch.settle((1, 7))
    assert batch.settle((2, 1))  # full
    assert batch.due(2) == (1, [])  # the tag of the old connection is not acked on the new one
    batch.reset()
    assert batch.due(2) == (None, [])
