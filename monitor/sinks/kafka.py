"""Alerts out to a Kafka topic (key = account, or ``market`` for market-level
alerts, such as the cascade alerts), and the batching producer behind it and
behind the dead-letter writer (:mod:`monitor.daemon.dlq`).

``publish`` only enqueues: records go into per-partition record batches
(``send_batch``, the partition chosen from the key by the producer's own
partitioner, as ``send()`` would) of up to :data:`BATCH_BYTES`. aiokafka keeps
one batch per partition in flight, so the batch size sets the throughput:
``send()`` fills the producer's ``max_batch_size`` (16 KiB, ~28 alerts) per
round trip; 256 KiB batches carry ~450 (see tests/bench/bench_alert_sinks.py).
``flush`` awaits every delivery: step 2 of the daemon's checkpoint, which never
gets ahead of an undelivered alert.

Failures never escape ``publish``: a batch that cannot be enqueued (topic
missing, metadata timeout, producer closed) or whose delivery fails
(unauthorized, timeout) is recorded, logged and counted; from then on new
records are held back rather than sent past it, and ``flush`` sends every
recorded record again in the original order (so per key too) before waiting,
and raises :class:`~monitor.sinks.base.DeliveryTimeoutError` if anything is
still not confirmed: the checkpoint is skipped, nothing is lost. Delivery
futures are dropped as soon as they complete, so what the producer holds is
bounded by what is not yet confirmed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from monitor.alerts.model import payloads, wire_account
from monitor.logs import get_logger
from monitor.sinks.base import DeliveryTimeoutError, SinkError
from monitor.sinks.partition import default_partitions, murmur2_many

Headers = list[tuple[str, bytes]]
Record = tuple[bytes | None, bytes, Headers]  # key, value, headers
Item = tuple[int, Record]  # (sequence number, record)

METADATA_TIMEOUT_S = 5.0
# Record batch size: well under the producer's max_request_size and the broker's
# message.max.bytes (both 1 MiB by default). Measured against Tansu, 100,000
# alerts of 580 bytes: 16 KiB 2.2 s, 256 KiB 0.9 s, 1 MiB 1.1 s.
BATCH_BYTES = 256 * 1024


class BatchProducer:
    """Ordered, batched, failure-tolerant writes of records to one topic.

    ``send`` enqueues and never raises for a broker problem; ``flush`` confirms
    everything sent so far or raises. Pass a started producer (shared: the
    caller starts and stops it)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        name: str,
        metadata_timeout_s: float = METADATA_TIMEOUT_S,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.name = name
        self.metadata_timeout_s = metadata_timeout_s
        self._seq = itertools.count()
        self._inflight: list[tuple[asyncio.Future[Any], list[Item]]] = []
        self._n_inflight = 0
        self._retry: list[Item] = []  # failed or held back, sent again by flush
        self._parts: list[int] | None = None
        self._partitioner: Any = getattr(producer, "_partitioner", None) or DefaultPartitioner()
        if isinstance(self._partitioner, DefaultPartitioner):
            murmur2_many([b"warm-up"])  # load the compiled kernel now, not in a crash
        self._batch_bytes = min(
            BATCH_BYTES, int(getattr(producer, "_max_request_size", 1 << 20)) // 2
        )
        # one logger per writer: bound to the logging set-up in force when it is made
        self._log = get_logger("monitor.sinks.kafka")
        self.delivered = 0
        self.failures = 0  # batches that failed (each logged)
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        """Records not confirmed yet (in flight, failed or held back)."""
        return self._n_inflight + len(self._retry)

    @property
    def batches_in_flight(self) -> int:
        """Delivery futures held (completed ones are dropped at each call)."""
        return len(self._inflight)

    async def send(self, records: Sequence[Record]) -> None:
        """Enqueue ``records`` in order (delivery is confirmed by :meth:`flush`)."""
        self._prune()
        if not records:
            return
        items = [(next(self._seq), r) for r in records]
        if self._retry:
            # a failure is outstanding: do not overtake it
            self._retry.extend(items)
            return
        await self._submit(items)

    async def flush(self, timeout_s: float) -> None:
        """Send again what failed or was held back (in order), wait for every
        delivery; raise if anything is not confirmed within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._prune()
        if self._retry:
            retry, self._retry = sorted(self._retry, key=lambda it: it[0]), []
            self._parts = None  # the topic may exist now, or have more partitions
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._submit(retry)
            except TimeoutError:
                pass  # what was not submitted is back in the retry list
        futures = [f for f, _ in self._inflight]
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        self._prune()
        if self._retry or self._inflight:
            raise DeliveryTimeoutError(
                f"{self.name}: {len(self._retry)} record(s) to {self.topic} failed or held "
                f"back, {self._n_inflight} not confirmed within {timeout_s:g} s"
                + (f" (last error: {self.last_error})" if self.last_error else "")
            )

    # ------------------------------------------------------------ internals
    async def _submit(self, items: list[Item]) -> None:
        """Enqueue ``items`` batch by batch, each partition in order and the
        partitions side by side (aiokafka takes one batch per partition at a
        time: one after the other they would wait a round trip each). Whatever
        is not enqueued when something fails, or when the caller is cancelled,
        goes to the retry list."""
        progress: list[list[Any]] = []  # [partition, its items, how many enqueued]
        errors: list[BaseException] = []
        try:
            parts = await self._partitions()
            groups: dict[int, list[Item]] = {}
            for it, p in zip(items, self._partition_all(items, parts), strict=True):
                groups.setdefault(p, []).append(it)
            progress = [[p, group, 0] for p, group in groups.items()]
            if len(progress) == 1:
                await self._submit_partition(progress[0], errors)
            else:
                async with asyncio.TaskGroup() as tg:
                    for entry in progress:
                        tg.create_task(
                            self._submit_partition(entry, errors), name=f"kafka-send-{entry[0]}"
                        )
        except asyncio.CancelledError:
            self._retry.extend(_unsent(items, progress))
            raise
        except Exception as exc:
            errors.append(exc)
        if errors:
            self._failed(_unsent(items, progress), errors[0])

    async def _submit_partition(self, entry: list[Any], errors: list[BaseException]) -> None:
        """The batches of one partition, in order; stops at the first error (kept
        in ``errors``: the other partitions go on)."""
        p, group, start = entry
        n = len(group)
        try:
            while start < n:
                batch = self._new_batch()
                append = batch.append
                end = start
                # the first record always fits, however large
                while end < n:
                    key, value, headers = group[end][1]
                    if append(key=key, value=value, timestamp=None, headers=headers) is None:
                        break
                    end += 1
                batch.close()
                fut = await self.producer.send_batch(batch, self.topic, partition=p)
                self._inflight.append((fut, group[start:end]))
                self._n_inflight += end - start
                start = entry[2] = end
        except Exception as exc:
            errors.append(exc)

    def _new_batch(self) -> Any:
        """A record batch of :data:`BATCH_BYTES`, built as ``create_batch`` builds
        its own (same compression) but larger; ``create_batch`` itself for a
        transactional producer, or one whose internals differ."""
        acc = getattr(self.producer, "_message_accumulator", None)
        compression = getattr(acc, "_compression_type", None)
        txn = getattr(self.producer, "_txn_manager", None)
        if compression is None or txn is not None:
            return self.producer.create_batch()
        return BatchBuilder(self._batch_bytes, compression)

    async def _partitions(self) -> list[int]:
        parts = self._parts
        if parts is None:
            found = await asyncio.wait_for(
                self.producer.partitions_for(self.topic), self.metadata_timeout_s
            )
            if not found:
                raise SinkError(f"topic {self.topic!r} has no partitions")
            parts = self._parts = sorted(found)
        return parts

    def _partition_all(self, items: list[Item], parts: list[int]) -> list[int]:
        """The partition of each record, as the producer's partitioner chooses it
        (Kafka's default, murmur2 of the key, computed for all keys at once)."""
        if (
            isinstance(self._partitioner, DefaultPartitioner)
            or self._partitioner is DefaultPartitioner
        ):
            keys = [k for k, _, _ in (it[1] for it in items) if k is not None]
            if len(keys) == len(items):
                out: list[int] = default_partitions(keys, parts).tolist()
                return out
        return [int(self._partitioner(it[1][0], parts, parts)) for it in items]

    def _prune(self) -> None:
        """Drop completed deliveries: confirmed ones are counted, failed ones
        recorded for the next flush."""
        if not self._inflight:
            return
        keep: list[tuple[asyncio.Future[Any], list[Item]]] = []
        for fut, chunk in self._inflight:
            if not fut.done():
                keep.append((fut, chunk))
                continue
            self._n_inflight -= len(chunk)
            if fut.cancelled():
                self._failed(chunk, "delivery cancelled")
            elif (exc := fut.exception()) is not None:
                self._failed(chunk, exc)
            else:
                self.delivered += len(chunk)
        self._inflight = keep

    def _failed(self, items: list[Item], exc: object) -> None:
        if not items:
            return
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        self._retry.extend(items)
        self._log.error(
            "kafka send failed (sent again at the next flush)",
            sink=self.name,
            topic=self.topic,
            records=len(items),
            error=self.last_error,
        )


def _unsent(items: list[Item], progress: list[list[Any]]) -> list[Item]:
    if not progress:
        return items
    return [it for _, group, start in progress for it in group[start:]]


class KafkaAlertSink:
    """An :class:`~monitor.engine.AlertSink` writing alerts as JSON to ``topic``.

    Pass a started ``producer`` to share one (the sink then neither starts nor
    stops it), or aiokafka ``producer_options`` to have the sink own one.
    """

    name = "kafka"
    durable = True

    def __init__(
        self,
        topic: str,
        producer: AIOKafkaProducer | None = None,
        **producer_options: Any,
    ) -> None:
        self.topic = topic
        self._own = producer is None
        self._options = producer_options
        self._producer = producer
        self._out: BatchProducer | None = None

    async def start(self) -> None:
        if self._own and self._producer is None:
            self._producer = AIOKafkaProducer(acks="all", **self._options)
            await self._producer.start()

    @property
    def delivered(self) -> int:
        return 0 if self._out is None else self._out.delivered

    @property
    def pending(self) -> int:
        """Alerts not confirmed yet (in flight, failed or held back)."""
        return 0 if self._out is None else self._out.pending

    def _writer(self) -> BatchProducer:
        if self._out is None:
            if self._producer is None:
                raise SinkError("kafka alert sink: publish before start")
            self._out = BatchProducer(self._producer, self.topic, name="kafka alert sink")
        return self._out

    async def publish(self, alerts: Sequence[Any]) -> None:
        """Enqueue ``alerts`` (delivery is awaited by :meth:`flush`)."""
        if not alerts:
            return
        out = self._writer()
        await out.send(
            [
                (wire_account(a).encode(), value, [])
                for a, value in zip(alerts, payloads(alerts), strict=True)
            ]
        )

    async def flush(self, timeout_s: float) -> None:
        """Wait for every delivery; what failed is sent again first. Raises
        :class:`~monitor.sinks.base.DeliveryTimeoutError` if not all confirmed."""
        if self._out is not None:
            await self._out.flush(timeout_s)

    async def close(self) -> None:
        if self._own and self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
