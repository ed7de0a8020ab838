"""Alert production from raw exposures (`aster night run --from-raw`, issue 5): each visit
read out by the camera simulator, then ISR with the instrument's calibration products and
characterization in the chain, before the difference. The figures must hold as they do
from rendered images, and the per-stage latency must name the raw-to-calexp stages."""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_night_from_raw_exposures_meets_the_figures(tmp_path):
    aster = os.environ["ASTER_BIN"]
    data = tmp_path / "data"
    out = tmp_path / "night"
    r = subprocess.run(
        [aster, "--data-dir", str(data), "night", "run", "--from-raw", "--visits", "3",
         "--template-visits", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    # The instrument was made first: calibration products of the night's camera.
    assert list((out / "instrument" / "calib").rglob("*.fits"))
    records = [json.loads(line) for line in open(out / "latency.jsonl") if line.strip()]
    assert len(records) == 3
    for rec in records:
        # The raw-to-calexp stages are timed with the rest, up to the archived alerts.
        assert {"isr", "characterize", "background", "difference", "alerts"} <= set(
            rec["stages"]), rec["stages"]
        assert rec["seconds"] >= sum(rec["stages"].values()) - 1e-6
    f = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "alert_figures.py"), str(out), "--check"],
        capture_output=True, text=True)
    print(f.stdout)
    assert f.returncode == 0, f.stdout + f.stderr
