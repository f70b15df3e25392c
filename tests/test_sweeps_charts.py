"""
The sweep benchmark's charts (L{benchmarks.sweeps.draw_charts}): drawn from the
figures the script reports when matplotlib is there, skipped with a message when
it is not.  Nothing here judges figures; they are made up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import sweeps


def _rows(points: tuple[Any, ...]) -> list[dict[str, Any]]:
    rows = []
    for index, point in enumerate(points, start=1):
        for mechanism, speed in ((sweeps.DISPATCHER, 2.0), (sweeps.NAIVE, 1.0)):
            rows.append(
                {
                    "point": point,
                    "mechanism": mechanism,
                    "events_per_s": 1000.0 * index * speed,
                    "p50_ms": 1.0 * index / speed,
                    "p99_ms": 2.0 * index / speed,
                }
            )
    return rows


def _figures() -> dict[str, Any]:
    return {
        "config": {"rounds": 1, "cpus": 2, "measured_on": "2026-01-01"},
        "sweeps": {
            "children": _rows(sweeps.CHILDREN_POINTS),
            "payload": _rows(sweeps.PAYLOAD_POINTS),
            "fanout": _rows(sweeps.FANOUT_POINTS),
            "in_flight": _rows((*sweeps.IN_FLIGHT_POINTS, sweeps.BASELINE_WINDOW)),
        },
    }


class DrawChartsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)

    def test_without_matplotlib(self) -> None:
        """
        Without matplotlib, no chart is drawn and the script says so, naming
        the extra that installs it; it does not fail.
        """
        out = io.StringIO()
        blocked = {"matplotlib": None, "matplotlib.pyplot": None}
        with mock.patch.dict(sys.modules, blocked), contextlib.redirect_stdout(out):
            written = sweeps.draw_charts(_figures(), str(self.directory / "charts"))
        self.assertEqual(written, [])
        self.assertIn("charts skipped: matplotlib is not installed", out.getvalue())
        self.assertIn("actordispatch[bench]", out.getvalue())
        self.assertFalse((self.directory / "charts").exists())

    def test_with_matplotlib(self) -> None:
        """
        With matplotlib, one PNG per sweep is written (under 150 KiB each).
        """
        if importlib.util.find_spec("matplotlib") is None:
            self.skipTest("matplotlib is not installed (the bench extra)")
        with contextlib.redirect_stdout(io.StringIO()):
            written = sweeps.draw_charts(_figures(), str(self.directory))
        self.assertEqual(
            sorted(Path(p).name for p in written),
            [
                "sweep-children.png",
                "sweep-fanout.png",
                "sweep-in-flight.png",
                "sweep-payload.png",
            ],
        )
        for path in written:
            data = Path(path).read_bytes()
            self.assertTrue(data.startswith(b"\x89PNG"))
            self.assertLess(len(data), 150 * 1024)
