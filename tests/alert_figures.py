#!/usr/bin/env python3
"""The figures of a night of alert production, from the records `aster night run` leaves
in its output directory (truth.csv, dia_sources.csv, latency.jsonl):

- completeness: the share of injected transients with true difference-image SNR >= 6
  that produced a DIASource (of the right sign, within 3 pixels, on the same visit);
- false DIASources per CCD per visit: those within 3 pixels of nothing that changed by
  more than 2 sigma; and the real/bogus score evaluated on that truth: the false ones
  still deemed reliable (reliability = 1 - spuriousness above 0.5), and the share of real
  ones (and of transients) deemed not;
- association purity for isolated variables (no other object within 5 arcsec): the share
  of their DIASources whose DIAObject holds that variable's sources only; and how many
  DIAObjects each variable was split over;
- asteroids: the share of catalogued asteroids with true SNR >= 6 whose DIASource was
  associated with their SSObject; the purity of those associations (DIASources given an
  ssObjectId that are that asteroid); and how many DIAObjects the asteroids missing from
  the orbit catalogue were found as;
- trailed-source fits: for asteroid DIASources with SNR >= 20, the true trail length (the
  motion while the shutter was open) against the fitted one, median and the median of
  their difference in units of the fit's error; for transients (no motion), the median
  fitted length;
- the known asteroids' absolute magnitudes in the SSObject summaries against the
  simulator's: median difference and median pull (ss_objects.csv);
- latency per CCD from the image's arrival to the rows written, p50 and max, and per stage.

    python tests/alert_figures.py DIR [--check]

With --check it exits 1 when transient completeness or asteroid association completeness
is < 95 %, or either purity < 99 %. Standard library only.
"""
import csv
import json
import math
import statistics
import sys
from collections import defaultdict

MATCH_PX = 3.0
ISOLATION_PX = 5.0 / 0.2


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figures(directory):
    truth = read(f"{directory}/truth.csv")
    sources = read(f"{directory}/dia_sources.csv")
    latency = [json.loads(line) for line in open(f"{directory}/latency.jsonl") if line.strip()]
    by_visit = defaultdict(list)
    for s in sources:
        by_visit[s["visit"]].append(s)
    truth_by_visit = defaultdict(list)
    for t in truth:
        truth_by_visit[t["visit"]].append(t)

    def near(s, t):
        return math.hypot(float(s["x"]) - float(t["x"]), float(s["y"]) - float(t["y"])) < MATCH_PX

    # Completeness over injected transients.
    expected = found = 0
    for t in truth:
        if t["kind"] != "transient":
            continue
        snr = float(t["snr"])
        if not math.isfinite(snr) or snr < 6.0:
            continue
        expected += 1
        if any(near(s, t) and s["isNegative"] == "false" for s in by_visit[t["visit"]]):
            found += 1

    # False DIASources: near nothing that changed; and what the real/bogus score makes of
    # them and of the real ones.
    false = false_reliable = real = real_doubted = transients_real = transients_doubted = 0
    for visit, ss in by_visit.items():
        changed = [t for t in truth_by_visit[visit]
                   if math.isfinite(float(t["snr"])) and abs(float(t["snr"])) > 2.0]
        for s in ss:
            reliable = float(s["spuriousness"]) < 0.5
            what = next((t for t in changed if near(s, t)), None)
            if what is None:
                false += 1
                false_reliable += reliable
            else:
                real += 1
                real_doubted += not reliable
                if what["kind"] == "transient":
                    transients_real += 1
                    transients_doubted += not reliable
    visits = len(latency)

    # Purity for isolated variables.
    first = {}
    for t in truth:
        first.setdefault(t["id"], t)
    objects = list(first.values())
    isolated = set()
    for t in objects:
        if t["kind"] != "variable":
            continue
        x, y = float(t["x"]), float(t["y"])
        if all(u is t or math.hypot(float(u["x"]) - x, float(u["y"]) - y) > ISOLATION_PX
               for u in objects):
            isolated.add(t["id"])
    # What each DIASource is: the nearest object of its visit within the match radius.
    def nearest_truth(s):
        ts = truth_by_visit[s["visit"]]
        best = min(ts, key=lambda t: math.hypot(float(s["x"]) - float(t["x"]),
                                                float(s["y"]) - float(t["y"])), default=None)
        return best["id"] if best is not None and near(s, best) else None
    truth_of = {s["diaSourceId"]: nearest_truth(s) for s in sources}

    members = defaultdict(list)   # diaObjectId -> truth ids of its sources
    of_variable = defaultdict(set)  # variable id -> diaObjectIds
    for ss in by_visit.values():
        for s in ss:
            tid = truth_of[s["diaSourceId"]]
            # A DIASource belongs to a DIAObject or to a solar system object.
            owner = s["diaObjectId"] or "ss" + s["ssObjectId"]
            members[owner].append(tid)
            if tid in isolated:
                of_variable[tid].add(owner)
    assoc_total = assoc_pure = 0
    for obj, tids in members.items():
        for tid in tids:
            if tid in isolated:
                assoc_total += 1
                if all(u == tid for u in tids):
                    assoc_pure += 1
    split = sum(1 for v in of_variable.values() if len(v) > 1)

    # Asteroids: catalogued ones to their SSObjects, the others to DIAObjects.
    ss_expected = ss_associated = 0
    for t in truth:
        if t["kind"] != "asteroid" or not float(t["snr"]) >= 6.0:
            continue
        ss_expected += 1
        if any(near(s, t) and s["ssObjectId"] == t["id"] for s in by_visit[t["visit"]]):
            ss_associated += 1
    with_ss = [s for s in sources if s["ssObjectId"]]
    ss_right = sum(1 for s in with_ss if truth_of[s["diaSourceId"]] == s["ssObjectId"])
    unlisted = {t["id"] for t in truth if t["kind"] == "unlisted_asteroid"}
    unlisted_objects = defaultdict(set)
    for s in sources:
        tid = truth_of[s["diaSourceId"]]
        if tid in unlisted and s["diaObjectId"]:
            unlisted_objects[tid].add(s["diaObjectId"])

    # Trails: asteroids move during the exposure, transients do not.
    true_trail = {(t["visit"], t["id"]): float(t["trail_arcsec"])
                  for t in truth if t["trail_arcsec"]}
    kind_of = {t["id"]: t["kind"] for t in truth}
    moving, still = [], []
    for s in sources:
        tid = truth_of[s["diaSourceId"]]
        if tid is None or not s["trailLength"] or float(s["snr"]) < 20.0:
            continue
        measured = float(s["trailLength"])
        if (s["visit"], tid) in true_trail:
            err = float(s["trailLengthErr"]) if s["trailLengthErr"] else float("nan")
            moving.append((true_trail[(s["visit"], tid)], measured, err))
        elif kind_of.get(tid) == "transient":
            still.append(measured)
    pulls = [(m - t) / e for t, m, e in moving if math.isfinite(e) and e > 0]

    # SSObject summaries: H against the truth.
    try:
        ss_h = read(f"{directory}/ss_objects.csv")
    except FileNotFoundError:
        ss_h = []
    h_diff = [float(r["H"]) - float(r["trueH"]) for r in ss_h]
    h_pull = [(float(r["H"]) - float(r["trueH"])) / float(r["HErr"]) for r in ss_h
              if float(r["HErr"]) > 0]

    seconds = sorted(r["seconds"] for r in latency)
    stages = defaultdict(list)
    for r in latency:
        for name, s in r["stages"].items():
            stages[name].append(s)
    return {
        "visits": visits,
        "transients_expected": expected,
        "transients_found": found,
        "completeness": found / expected if expected else float("nan"),
        "false_per_ccd_visit": false / visits if visits else float("nan"),
        "false_reliable_per_ccd_visit": false_reliable / visits if visits else float("nan"),
        "real_doubted": real_doubted / real if real else float("nan"),
        "transients_doubted": (transients_doubted / transients_real
                               if transients_real else float("nan")),
        "isolated_variables": len(isolated),
        "variable_sources": assoc_total,
        "purity": assoc_pure / assoc_total if assoc_total else float("nan"),
        "variables_split": split,
        "asteroids_expected": ss_expected,
        "asteroids_associated": ss_associated,
        "ss_completeness": ss_associated / ss_expected if ss_expected else float("nan"),
        "ss_sources": len(with_ss),
        "ss_purity": ss_right / len(with_ss) if with_ss else float("nan"),
        "unlisted_asteroids": len(unlisted),
        "unlisted_found": len(unlisted_objects),
        "unlisted_dia_objects": sum(len(v) for v in unlisted_objects.values()),
        "trails": len(moving),
        "trail_true": statistics.median(t for t, _, _ in moving) if moving else float("nan"),
        "trail_fit": statistics.median(m for _, m, _ in moving) if moving else float("nan"),
        "trail_pull": statistics.median(pulls) if pulls else float("nan"),
        "still_trail": statistics.median(still) if still else float("nan"),
        "still": len(still),
        "ss_h": len(ss_h),
        "ss_h_diff": statistics.median(h_diff) if h_diff else float("nan"),
        "ss_h_pull": statistics.median(h_pull) if h_pull else float("nan"),
        "latency_p50": statistics.median(seconds) if seconds else float("nan"),
        "latency_max": seconds[-1] if seconds else float("nan"),
        "stages": {n: (statistics.median(v), max(v)) for n, v in stages.items()},
    }


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    f = figures(argv[1])
    print(f"visits                              {f['visits']}")
    print(f"transients with true SNR >= 6       {f['transients_expected']}")
    print(f"  with a DIASource                  {f['transients_found']}"
          f"  ({100 * f['completeness']:.1f} %)")
    print(f"false DIASources per CCD per visit  {f['false_per_ccd_visit']:.2f}"
          f"  ({f['false_reliable_per_ccd_visit']:.2f} with reliability > 0.5)")
    print(f"real DIASources with reliability <= 0.5  {100 * f['real_doubted']:.2f} %"
          f"  (transients {100 * f['transients_doubted']:.2f} %)")
    print(f"isolated variables                  {f['isolated_variables']}"
          f"  ({f['variable_sources']} DIASources)")
    print(f"association purity                  {100 * f['purity']:.2f} %"
          f"  ({f['variables_split']} variables split over several DIAObjects)")
    print(f"catalogued asteroids, true SNR >= 6 {f['asteroids_expected']}")
    print(f"  associated with their SSObject    {f['asteroids_associated']}"
          f"  ({100 * f['ss_completeness']:.1f} %)")
    print(f"DIASources given an SSObject        {f['ss_sources']}"
          f"  (purity {100 * f['ss_purity']:.2f} %)")
    print(f"asteroids not in the catalogue      {f['unlisted_asteroids']}"
          f"  ({f['unlisted_found']} found, as {f['unlisted_dia_objects']} DIAObjects)")
    print(f"asteroid trails, SNR >= 20          {f['trails']}: true median {f['trail_true']:.2f}\","
          f" fitted {f['trail_fit']:.2f}\", median (fit - true) / error {f['trail_pull']:.2f}")
    print(f"transients, SNR >= 20               {f['still']}: fitted trail median"
          f" {f['still_trail']:.2f}\"")
    print(f"SSObject H against the truth        {f['ss_h']} (object, band):"
          f" median difference {f['ss_h_diff']:.3f} mag, median pull {f['ss_h_pull']:.2f}")
    print(f"latency per CCD                     p50 {f['latency_p50']:.2f} s"
          f"  max {f['latency_max']:.2f} s")
    for name, (p50, mx) in f["stages"].items():
        print(f"  {name:<32}  p50 {p50:.2f} s  max {mx:.2f} s")
    if "--check" in argv:
        ok = (f["completeness"] >= 0.95 and f["purity"] >= 0.99
              and f["ss_completeness"] >= 0.95 and f["ss_purity"] >= 0.99)
        if not ok:
            print("FAILED: completeness (transients, asteroid association) must be >= 95 %"
                  " and purity (variables, asteroids) >= 99 %")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
