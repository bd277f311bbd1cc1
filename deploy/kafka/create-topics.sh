#!/usr/bin/env bash
# Creates the monitor's topics (idempotent). Run by the `kafka-init` service of
# deploy/compose.yaml; against another cluster:
#   BOOTSTRAP=broker:9092 REPLICATION=3 deploy/kafka/create-topics.sh
# Topic names must match [topics] in the monitor's config.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
REPLICATION="${REPLICATION:-1}"
TOPICS_BIN="${TOPICS_BIN:-/opt/kafka/bin/kafka-topics.sh}"

create_topic() {
  local name="$1" partitions="$2"
  shift 2
  local configs=()
  for c in "$@"; do configs+=(--config "$c"); done
  "$TOPICS_BIN" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" \
    "${configs[@]}"
}

# Mark prices, key = symbol; every instance reads all partitions.
create_topic prices 6
# Full-state position and balance messages, key = account: compaction keeps the
# latest state of every account, so a new instance can rebuild the book.
create_topic account-events 12 cleanup.policy=compact
# Alerts out, key = account or `market`.
create_topic alerts 6
# Rejected input: original bytes, the reason in a header.
create_topic monitor-dlq 3 retention.ms=1209600000
# Partial market figures shared between instances; compacted (latest per key).
create_topic monitor-partials 12 cleanup.policy=compact

"$TOPICS_BIN" --bootstrap-server "$BOOTSTRAP" --describe \
  --topic 'prices|account-events|alerts|monitor-dlq|monitor-partials'
