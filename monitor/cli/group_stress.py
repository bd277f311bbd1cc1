"""``monitor stress --from-kafka``: the group view from the partials topic."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

import orjson

from monitor.cascade.group import group_cascade
from monitor.cascade.group_render import format_group_cascade, format_sources
from monitor.cascade.groupview import BOUNDS
from monitor.cascade.partial import merge_partials
from monitor.cascade.render import format_map
from monitor.cascade.shocks import Scenario
from monitor.clock import WallClock
from monitor.config import load_config
from monitor.errors import ConfigError
from monitor.instruments.model import RiskParams
from monitor.sources.partials import read_partials


def run_from_kafka(args: argparse.Namespace, params: RiskParams, scenario: Scenario | None) -> int:
    cfg = load_config(args.config)
    kafka = cfg.kafka
    if args.bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap_servers=args.bootstrap)
    topic = cfg.topics.partials
    try:
        feed = asyncio.run(read_partials(kafka, topic))
    except TimeoutError:
        raise ConfigError(
            f"{kafka.bootstrap_servers}: could not read topic {topic!r} in time "
            "(is the broker reachable and the topic there?)"
        ) from None
    if not feed.latest:
        raise ConfigError(f"topic {topic!r} holds no readable partial (is a monitor running?)")
    max_age = None
    if cfg.market is not None:
        max_age = round(cfg.market.partials_max_age_s * 1000)
    try:
        merged = merge_partials(
            feed.latest.values(), now_ms=WallClock().now_ms(), max_age_ms=max_age
        )
    except ValueError as exc:
        raise ConfigError(f"topic {topic!r}: {exc}") from None
    if scenario is None:
        doc = {
            "instances": list(merged.instances),
            "left_out": merged.left_out,
            **merged.map.to_json(),
        }
        text = format_sources(merged) + "\n" + format_map(merged.map)
    else:
        results = {
            b: group_cascade(merged, params, scenario, bound=b, impact=args.impact,
                             max_rounds=args.max_rounds)
            for b in BOUNDS
        }  # fmt: skip
        doc = {
            "instances": list(merged.instances),
            "left_out": merged.left_out,
            "bounds": {b: r.to_json() for b, r in results.items()},
        }
        text = format_sources(merged) + "\n" + format_group_cascade(results)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        sys.stdout.write(text + "\n")
    sys.stdout.flush()
    return 0
