#!/usr/bin/env python3
"""Compares a single-visit pipeline run with the simulator's truth and prints the figures
issue 3 asks for: point-source completeness at true SNR >= 10, PSF-flux pulls, astrometric
RMS of bright stars, zeropoints against the simulated throughput.

    python3 tests/validation/pipeline_truth.py DATA_DIR [--run single-visit] [--json]

Reads DATA_DIR/truth/ (from `aster simulate`) and DATA_DIR/runs/<run>/ (from `aster
pipeline run`). Exits 1 when a figure misses its target (--check)."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--run", default="single-visit")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    figures = evaluate(args.data_dir, args.run)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for k, v in figures.items():
            print(f"{k:32s} {v}")
    if args.check:
        failed = [k for k, ok in targets(figures).items() if not ok]
        if failed:
            print("missed:", ", ".join(failed), file=sys.stderr)
            sys.exit(1)


def targets(f):
    return {
        "completeness": f["completeness_snr10"] >= 0.99,
        "pulls": 0.9 <= f["psf_pull_std"] <= 1.1,
        "astrometry": f["astrometric_rms_mas"] <= 20.0,
        "zeropoint": f["zeropoint_max_abs_diff_mag"] <= 0.01,
    }


def evaluate(data_dir: Path, run: str):
    run_dir = data_dir / "runs" / run
    truth_visits = pq.read_table(data_dir / "truth" / "visits.parquet").to_pandas()
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "ccdvisit").glob("*.json"))]
    if not records:
        raise SystemExit(f"no processed CCD visits under {run_dir}")
    zp_diffs, found, total, pulls, offsets = [], 0, 0, [], []
    rocks_found, rocks_total = 0, 0
    for r in records:
        stem = f"{r['visit']}_{r['detector_name']}"
        tv = truth_visits[(truth_visits.visit == r["visit"]) & (truth_visits.detector == r["detector"])].iloc[0]
        zp_diffs.append(r["zero_point"] - tv.zeroPoint)
        truth = pq.read_table(data_dir / "truth" / "sources" / f"{stem}.parquet").to_pandas()
        src = pq.read_table(run_dir / "sources" / f"{stem}.parquet").to_pandas()
        with fits.open(run_dir / "pvi" / f"{stem}.fits") as h:
            mask = h["MASK"].data
            bits = {k[3:]: v for k, v in h["MASK"].header.items() if k.startswith("MP_")}
        w, hgt = r["x_size"], r["y_size"]
        bad = (1 << bits["BAD"]) | (1 << bits["SAT"]) | (1 << bits["NO_DATA"])
        # True SNR of a PSF fit: counts over the noise of sky and source in 4 pi sigma^2.
        zp = tv.zeroPoint
        counts = truth.flux.values * 10 ** (0.4 * (zp - 31.4))
        sky_counts = r["sky_bg"] * 10 ** (0.4 * (zp - 31.4))
        area = 4 * np.pi * r["psf_sigma"] ** 2
        snr = counts / np.sqrt(counts + area * sky_counts)
        xi, yi = np.round(truth.x.values).astype(int), np.round(truth.y.values).astype(int)
        inside = (xi >= 10) & (yi >= 10) & (xi < w - 10) & (yi < hgt - 10)
        clean = np.zeros(len(truth), bool)
        clean[inside] = (mask[yi[inside], xi[inside]] & bad) == 0
        sel = truth.isStar.values & (snr >= 10) & clean
        sx, sy = src.x.values, src.y.values
        for i in np.flatnonzero(sel):
            total += 1
            d = np.hypot(sx - truth.x.values[i], sy - truth.y.values[i])
            j = int(np.argmin(d)) if len(d) else -1
            if j >= 0 and d[j] < 2.0:
                found += 1
                s = src.iloc[j]
                isolated = not s.blended
                # Flagged measurements (masked, saturated or interpolated pixels, edges,
                # failed centroids) are known to be unreliable and are left out.
                clean_measurement = not (s.pixelFlags_masked or s.pixelFlags_edge or s.centroid_flag)
                if isolated and clean_measurement and s.psfFluxErr > 0:
                    pulls.append((s.psfFlux - truth.flux.values[i]) / s.psfFluxErr)
                if snr[i] >= 100 and isolated:
                    dra = (s.coord_ra - truth.ra.values[i]) * np.cos(np.radians(truth.dec.values[i]))
                    ddec = s.coord_dec - truth.dec.values[i]
                    offsets.append(np.hypot(dra, ddec) * 3.6e6)
        # Asteroids: trailed by a pixel or two in a visit, found where they were at its
        # middle.
        if "isMoving" in truth:
            for i in np.flatnonzero(truth.isMoving.values & (snr >= 10) & clean):
                rocks_total += 1
                d = np.hypot(sx - truth.x.values[i], sy - truth.y.values[i])
                rocks_found += int(len(d) > 0 and d.min() < 2.0)
    pulls = np.array(pulls)
    return {
        "asteroids_snr10": rocks_total,
        "asteroid_completeness_snr10": round(rocks_found / max(rocks_total, 1), 4),
        "ccd_visits": len(records),
        "stars_snr10": total,
        "completeness_snr10": round(found / max(total, 1), 4),
        "psf_pull_mean": round(float(pulls.mean()), 3) if len(pulls) else None,
        "psf_pull_std": round(float(pulls.std()), 3) if len(pulls) else None,
        "bright_stars": len(offsets),
        "astrometric_rms_mas": round(float(np.sqrt(np.mean(np.square(offsets)))), 2) if offsets else None,
        "zeropoint_max_abs_diff_mag": round(float(np.max(np.abs(zp_diffs))), 4),
        "zeropoint_mean_diff_mag": round(float(np.mean(zp_diffs)), 4),
    }


if __name__ == "__main__":
    main()
