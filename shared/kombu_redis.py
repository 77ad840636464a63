"""kombu's Redis transport, with one Redis client per channel for its one-off commands.

kombu's Redis channel makes a new ``redis.Redis`` for every publish, acknowledgement and prefetch bookkeeping step
(``Channel.conn_or_acquire`` → ``_create_client``), all over the channel's one connection pool; since redis-py 6 a
client builds ~170 response callbacks when it is made, which cost a web request a tenth of a millisecond per publish
and a worker a few tenths per message. This channel makes that client once (and again only if kombu replaced the
pool, after a connection error or a fork). Everything else is kombu's: the message format, the queues, the
visibility timeout and the unacked index are unchanged, so workers and senders with and without it interoperate.

Used by :func:`shared.broker.configure` as Celery's ``broker_transport`` (the ``redis://`` URL is parsed as usual).
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _one_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # the event loop's BRPOP/LISTEN connection: kombu keeps that client itself
            return super()._create_client(asynchronous=True)
        client = self._one_client
        if client is None or client.connection_pool is not self.pool:
            client = self._one_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
