"""Waiting-for-healthy progress: a line per status change, else one every few seconds."""

from __future__ import annotations

from deployer.cli.deploy_view import WaitProgress


def test_lines_on_change_and_at_most_every_interval() -> None:
    lines: list[str] = []
    progress = WaitProgress(lines.append, every_s=5.0)
    for i in range(200):  # 10 s of 50 ms polls
        progress(i * 0.05, "starting")
    progress(10.0, "healthy")
    assert [ln.split()[-1] for ln in lines] == ["starting", "starting", "healthy"]
    assert [float(ln.split()[0][:-1]) for ln in lines] == [0.0, 5.0, 10.0]
