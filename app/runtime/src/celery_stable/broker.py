"""The broker side of a crash: put a task's message back, or take it out for good.

kombu's Redis transport keeps a delivered, unacknowledged message (``task_acks_late``) in the
``unacked`` hash as ``[payload, exchange, routing_key]`` and puts it back on its queue after
the visibility timeout (an hour by default). The ledger stores the same triple for every
attempt, whatever the app's ack mode, so the runtime can do at once what kombu would do an hour
later, through kombu's own restore path: same payload, same delivery tag, same queue and
priority. Only Redis brokers are supported (settings refuse others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection
from kombu.transport.redis import Channel


def payload_of(message: Any) -> str:
    """The ``[payload, exchange, routing_key]`` triple kombu's unacked hash holds for it."""
    delivery = message.delivery_info or {}
    return json.dumps([message._raw, delivery.get("exchange", ""), delivery.get("routing_key", "")])


@contextmanager
def redis_channel(connection: Connection) -> Iterator[Channel]:
    channel = connection.default_channel
    if not isinstance(channel, Channel):
        raise TypeError(f"the broker is not Redis ({connection.transport_cls}): unsupported")
    yield channel


def restore(connection: Connection, tag: str, payload: str) -> None:
    """Put the message back on its queue, first in line; its unacked copy, if any, goes.

    One Redis transaction, like kombu's own ``restore_by_tag``; the unacked copy is preferred to
    the ledger's (it is the same message, possibly newer headers).
    """
    stored = json.loads(payload)
    with redis_channel(connection) as channel, channel.conn_or_acquire() as client:

        def move(pipe: Any) -> None:
            held = pipe.hget(channel.unacked_key, tag)
            message, exchange, routing_key = json.loads(held) if held else stored
            pipe.multi()
            pipe.zrem(channel.unacked_index_key, tag)
            pipe.hdel(channel.unacked_key, tag)
            channel._do_restore_message(message, exchange, routing_key, pipe)

        client.transaction(move, channel.unacked_key)


def discard(connection: Connection, tag: str) -> None:
    """Forget the unacked copy, so that it is never redelivered (a task given up)."""
    with redis_channel(connection) as channel, channel.conn_or_acquire() as client:
        client.pipeline().zrem(channel.unacked_index_key, tag).hdel(
            channel.unacked_key, tag
        ).execute()


def holds(connection: Connection, tag: str, payload: str) -> bool:
    """Whether the broker still holds this message: on its queue or unacked."""
    _message, exchange, routing_key = json.loads(payload)
    with redis_channel(connection) as channel, channel.conn_or_acquire() as client:
        if client.hexists(channel.unacked_key, tag):
            return True
        for queue in channel._lookup(exchange, routing_key):
            for priority in channel.priority_steps:
                for item in client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                    text = item.decode() if isinstance(item, bytes) else item
                    if tag in text:
                        return True
    return False
