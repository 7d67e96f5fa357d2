"""The fan-out benchmark still runs end to end (a tiny room, one short run each).

It asserts what the run must produce, never how fast: the figures depend on the
machine and on whatever else it is doing."""

from __future__ import annotations

import json
import re

from chatlib.bench import fanout


def test_a_tiny_fanout_run_measures_every_server(capsys, tmp_path):
    figures = tmp_path / "fanout.json"
    status = fanout.main(["--quick", "--members", "3", "--seconds", "0.3", "--json", str(figures)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = [
        line for line in out.splitlines() if re.match(r"\| (threads|asyncio|baseline) \|", line)
    ]
    assert [row.split("|")[1].strip() for row in rows] == ["threads", "asyncio", "baseline"]
    assert "3 members: asyncio engine at" in out

    results = json.loads(figures.read_text())["results"]
    for result in results:
        assert result["members"] == 3
        assert result["deliveries_per_s"] > 0
        assert 0 < result["idle_p50_ms"] <= result["idle_p99_ms"]
        assert 0 < result["loaded_p50_ms"] <= result["loaded_p99_ms"]


def test_bad_arguments_are_one_line():
    assert fanout.main(["--engines", "threads,nope"]) == 2
    assert fanout.main(["--members", "ten"]) == 2
