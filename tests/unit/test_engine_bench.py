"""The mixed-stream bench measures work actually done: fresh timestamps every pass."""

from __future__ import annotations

from monitor.bench.book import MixedStream, peak_rss_mb, rss_mb, run_stream
from monitor.bench.synthetic import build_book, generate
from monitor.events import Decoder, Tick


def test_each_pass_of_the_mixed_stream_is_applied_in_full_and_a_replay_is_not() -> None:
    syn = generate(300)
    book = build_book(syn)
    decoder = Decoder(syn.params)
    stream = MixedStream(syn, 3000)
    first, second = stream.encode(0), stream.encode(3000)
    assert run_stream(book, decoder, first, 100) == 0
    assert run_stream(book, decoder, second, 100) == 0  # fresh, increasing timestamps
    # replaying bytes already applied: every tick but the newest of each symbol is stale
    again = run_stream(book, decoder, second, 100)
    ticks = [ev for ev in map(decoder.decode_event, second) if isinstance(ev, Tick)]
    assert again >= len(ticks) - syn.params.n_instruments
    kinds = {type(ev).__name__ for ev in map(decoder.decode_event, first)}
    assert kinds == {"Tick", "PositionEvent", "BalanceEvent"}


def test_the_mixed_stream_is_ninety_percent_ticks_over_every_instrument() -> None:
    syn = generate(200)
    decoder = Decoder(syn.params)
    evs = [decoder.decode_event(raw) for raw in MixedStream(syn, 5000).encode(0)]
    ticks = [ev for ev in evs if isinstance(ev, Tick)]
    assert 0.88 < len(ticks) / len(evs) < 0.92
    assert len({t.symbol for t in ticks}) == syn.params.n_instruments


def test_peak_rss_is_never_below_the_current_rss() -> None:
    assert peak_rss_mb() >= rss_mb() > 0
