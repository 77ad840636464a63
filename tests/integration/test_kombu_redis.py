"""shared/kombu_redis.py: kombu's Redis transport with one client per channel; shared/broker.py:withdraw, which takes
joined jobs' waiting messages out of their queue. On the stack's real Redis."""

from __future__ import annotations

import uuid

from kombu import Connection, Exchange, Queue

from shared.broker import configure
from shared.kombu_redis import Channel, Transport


def test_celery_apps_of_genqueue_use_it_for_redis_urls_only():
    from celery import Celery

    assert configure(Celery("a"), "redis://127.0.0.1:6379/0").conf.broker_transport == "shared.kombu_redis:Transport"
    assert not configure(Celery("b"), "sentinel://127.0.0.1:26379").conf.broker_transport  # kombu's own


def test_one_client_serves_the_channel_until_its_pool_is_replaced(stack):
    with Connection(stack.redis.url, transport=Transport) as conn:
        channel = conn.default_channel
        assert isinstance(channel, Channel)
        first = channel._create_client()
        assert channel._create_client() is first
        assert channel._create_client(asynchronous=True) is not first  # the event loop's own connection
        channel._disconnect_pools()  # what kombu does after a connection error
        again = channel._create_client()
        assert again is not first and again.connection_pool is channel.pool
        assert again.ping()


def test_messages_published_and_consumed_as_with_kombus_transport(stack):
    """Publish with this transport, consume with kombu's (and back): the format and the acks are kombu's own."""
    name = f"kombu-redis-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name), routing_key=name)
    for sender, receiver in ((Transport, None), (None, Transport)):
        body = {"job": uuid.uuid4().hex}
        with Connection(stack.redis.url, transport=sender) as conn:
            conn.Producer().publish(body, exchange=queue.exchange, routing_key=name, declare=[queue])
        with Connection(stack.redis.url, transport=receiver) as conn:
            got: list = []

            def receive(b, m, got=got):
                got.append(b)
                m.ack()

            with conn.Consumer(queue, callbacks=[receive]):
                conn.drain_events(timeout=10)
            assert got == [body]
            assert conn.default_channel.client.hlen("unacked") == 0  # acknowledged


def test_withdraw_takes_exactly_the_named_jobs_messages_out_of_their_lists(stack):
    """Messages published as the web publishes them (every priority step); some named ones sit deep in a list of
    others (past several 64-entry chunks, after earlier removals), some are not there at all."""
    import redis

    from shared.broker import JOB_ID, publish, queue_list, withdraw
    from shared.ids import new_id

    queue = f"withdraw-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(stack.redis.url)
    jobs = [(new_id("job"), priority) for priority in (0, 0, 50, -50) for _ in range(100)]  # oldest first
    for job_id, priority in jobs:
        assert publish(job_id, "text.generate", queue, priority)
    named = [jobs[k] for k in (0, 1, 63, 64, 65, 99, 150, 399)]
    gone = [(new_id("job"), 0), (new_id("job"), 50)]  # delivered already, or never published
    assert withdraw(queue, [*named, *gone]) == len(named)

    def waiting(priority: int) -> list[str]:
        raw = client.lrange(queue_list(queue, priority), 0, -1)
        return [JOB_ID.search(r).group().decode() for r in reversed(raw)]  # oldest first

    left = {p: waiting(p) for p in (0, 50, -50)}
    expected = {p: [j for j, q in jobs if q == p and (j, q) not in named] for p in (0, 50, -50)}
    assert left == expected
    assert withdraw(queue, named) == 0  # twice is harmless
    client.close()
