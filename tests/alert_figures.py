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
  of their DIASources whose DIAObject holds no other object's sources (and, strictly, no
  artefacts either: DIASources 3 pixels or more from any true change, such as the lumps a
  bright variable's imperfect subtraction leaves); and how many DIAObjects each variable
  was split over;
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
- faint DIASources (under the threshold, faint_sources.csv): how many per CCD per visit,
  the share of the monitoring sample at a true change, and those kept at catalogued
  asteroids' predicted places: how many are that asteroid, and the share of the
  asteroids with true SNR 4 to 5 (too faint for a DIASource) found that way;
- the field's Objects (measured on its template) against the truth: how many of them
  lie within 0.5 arcsec of a star or a galaxy, and the share of those classified as one;
- nearby Objects: for variables (2 arcsec from any other object), the share of their
  DIAObjects whose most probable Object is the variable itself (within 0.5 arcsec of its
  place, a star), with the median probability; for transients in a galaxy, the share
  whose nearest Object is the host (within 1 arcsec of its centre); and the median
  probability of the most likely Object for transients with and without a host
  (population.csv, objects.csv, nearby.csv);
- periods (periodic.csv, after a season of nights, `--nights`): for DIAObjects on a
  periodic variable, the share whose Lomb-Scargle period is the true one within 1 %, and
  the share at one of its daily aliases (frequency off by a whole number per day, within
  0.05 per day), which sparse nightly sampling cannot tell apart;
- latency per CCD from the image's arrival to the rows written, p50 and max, and per stage.

    python tests/alert_figures.py DIR [--check]

With --check it exits 1 when transient completeness or asteroid association completeness
is < 95 %, or either purity < 99 %; when fewer than 90 % of the variables' DIAObjects
have the variable as their most probable Object, or fewer than 80 % of the hosted
transients' have the host as their nearest Object (none of either fails too; the misses
are blends the deblender split or merged); when more than 5 % of the real transients'
DIASources are deemed unreliable; or, where there are 10 or more of them, when the
asteroids' fitted trails are off the truth by a median pull beyond one, the transients'
fitted trails reach a median of half the asteroids' true one, or the SSObjects' H differ
from the truth by a median beyond 0.1 mag. Standard library only.
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
    # Impure: the DIAObject also holds another object's sources. Artefacts (DIASources
    # at no true change: residuals of the variable's own imperfect subtraction) are false
    # DIASources, counted above; the strict figure counts them as impurities too.
    assoc_total = assoc_pure = assoc_strict = 0
    for obj, tids in members.items():
        for tid in tids:
            if tid in isolated:
                assoc_total += 1
                assoc_pure += all(u == tid or u is None for u in tids)
                assoc_strict += all(u == tid for u in tids)
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

    nearby = nearby_figures(directory, truth_of, sources, kind_of)
    faint = faint_figures(directory, truth_by_visit, near, visits)

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
        "purity_strict": assoc_strict / assoc_total if assoc_total else float("nan"),
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
        **nearby,
        **faint,
        **periodic_figures(directory),
        "latency_p50": statistics.median(seconds) if seconds else float("nan"),
        "latency_max": seconds[-1] if seconds else float("nan"),
        "stages": {n: (statistics.median(v), max(v)) for n, v in stages.items()},
    }


def separation(a, b):
    """Small-angle distance between two (ra, dec) in degrees, arcsec."""
    dra = (a[0] - b[0]) * math.cos(math.radians((a[1] + b[1]) / 2))
    return math.hypot(dra, a[1] - b[1]) * 3600.0


def faint_figures(directory, truth_by_visit, near, visits):
    faint = read(f"{directory}/faint_sources.csv")
    sample = [f for f in faint if not f["ssObjectId"]]
    at_change = sum(
        1 for f in sample
        if any(near(f, t) for t in truth_by_visit[f["visit"]]
               if math.isfinite(float(t["snr"])) and abs(float(t["snr"])) > 2.0))
    watched = [f for f in faint if f["ssObjectId"]]
    right = sum(1 for f in watched
                if any(near(f, t) and t["id"] == f["ssObjectId"] for t in truth_by_visit[f["visit"]]))
    faint_asteroids = [t for ts in truth_by_visit.values() for t in ts
                       if t["kind"] == "asteroid" and 4.0 <= float(t["snr"]) < 5.0]
    recovered = sum(1 for t in faint_asteroids
                    if any(near(f, t) and f["ssObjectId"] == t["id"] for f in watched))
    return {
        "faint_per_ccd_visit": len(faint) / visits if visits else float("nan"),
        "faint_sample": len(sample),
        "faint_sample_real": at_change / len(sample) if sample else float("nan"),
        "faint_watched": len(watched),
        "faint_watched_right": right / len(watched) if watched else float("nan"),
        "faint_asteroids": len(faint_asteroids),
        "faint_asteroids_found": recovered / len(faint_asteroids) if faint_asteroids else float("nan"),
    }


def nearby_figures(directory, truth_of, sources, kind_of):
    population = {r["id"]: r for r in read(f"{directory}/population.csv")}
    objects = {r["objectId"]: r for r in read(f"{directory}/objects.csv")}
    matches = defaultdict(list)
    for r in read(f"{directory}/nearby.csv"):
        matches[r["diaObjectId"]].append(r)
    place = lambda r: (float(r["ra"]), float(r["dec"]))

    # Objects against the truth, through a coarse grid of the truth's places.
    cell = 2.0 / 3600.0
    grid = defaultdict(list)
    for r in population.values():
        grid[(int(float(r["ra"]) / cell), int(float(r["dec"]) / cell))].append(r)
    matched = right = 0
    for o in objects.values():
        ra, dec = place(o)
        i, j = int(ra / cell), int(dec / cell)
        near = [t for di in (-1, 0, 1) for dj in (-1, 0, 1) for t in grid[(i + di, j + dj)]]
        best = min(near, key=lambda t: separation(place(t), (ra, dec)), default=None)
        if best is not None and separation(place(best), (ra, dec)) < 0.5:
            matched += 1
            right += best["galaxy"] == o["galaxy"]

    # Each truth object's DIAObjects, through its DIASources.
    dia_objects = defaultdict(set)
    for s in sources:
        tid = truth_of[s["diaSourceId"]]
        if tid is not None and s["diaObjectId"]:
            dia_objects[tid].add(s["diaObjectId"])

    def most_probable(dia_object):
        return max(matches.get(dia_object, []), key=lambda m: float(m["lnP"]), default=None)

    # Variables with no other object within 2 arcsec: a blend is a question for the
    # deblender, not for the match.
    def clear(tid):
        ra, dec = place(population[tid])
        i, j = int(ra / cell), int(dec / cell)
        return all(t["id"] == tid or separation(place(t), (ra, dec)) > 2.0
                   for di in (-1, 0, 1) for dj in (-1, 0, 1) for t in grid[(i + di, j + dj)])
    own = own_total = 0
    own_p = []
    for tid in (t for t, k in kind_of.items() if k == "variable" and clear(t)):
        for d in dia_objects.get(tid, ()):
            best = most_probable(d)
            own_total += 1
            if best is None:
                continue
            o = objects[best["objectId"]]
            if o["galaxy"] == "false" and separation(place(o), place(population[tid])) < 0.5:
                own += 1
                own_p.append(math.exp(float(best["lnP"])))
    host_found = hosted = 0
    hosted_p, hostless_p = [], []
    for tid, t in population.items():
        if kind_of.get(tid) != "transient":
            continue
        for d in dia_objects.get(tid, ()):
            best = most_probable(d)
            p = math.exp(float(best["lnP"])) if best else 0.0
            if t["host"]:
                hosted += 1
                hosted_p.append(p)
                nearest = min(matches.get(d, []), key=lambda m: float(m["dist"]), default=None)
                if nearest is not None and separation(
                        place(objects[nearest["objectId"]]), place(population[t["host"]])) < 1.0:
                    host_found += 1
            else:
                hostless_p.append(p)
    median = lambda v: statistics.median(v) if v else float("nan")
    return {
        "objects": len(objects),
        "objects_galaxies": sum(o["galaxy"] == "true" for o in objects.values()),
        "objects_matched": matched,
        "objects_classified": right / matched if matched else float("nan"),
        "variable_dia_objects": own_total,
        "variables_own": own / own_total if own_total else float("nan"),
        "variables_own_p": median(own_p),
        "hosted_dia_objects": hosted,
        "hosts_found": host_found / hosted if hosted else float("nan"),
        "hosted_p": median(hosted_p),
        "hostless_p": median(hostless_p),
    }


def periodic_figures(directory):
    try:
        rows = [r for r in read(f"{directory}/periodic.csv") if r["truePeriod"]]
    except FileNotFoundError:
        rows = []
    right = alias = significant = 0
    for r in rows:
        f, true = 1 / float(r["period"]), 1 / float(r["truePeriod"])
        if abs(f - true) <= 0.01 * true:
            right += 1
        elif abs(f - true) >= 0.5 and abs((f - true) - round(f - true)) <= 0.05:
            alias += 1
        significant += float(r["falseAlarmProb"]) < 0.01
    return {"periodic": len(rows), "period_right": right, "period_alias": alias,
            "period_significant": significant}


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
          f"  ({f['variables_split']} variables split over several DIAObjects;"
          f" {100 * f['purity_strict']:.2f} % with artefacts as impurities)")
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
    print(f"faint DIASources per CCD per visit  {f['faint_per_ccd_visit']:.1f}: sample of"
          f" {f['faint_sample']} ({100 * f['faint_sample_real']:.1f} % at a true change),"
          f" {f['faint_watched']} at asteroids' predicted places"
          f" ({100 * f['faint_watched_right']:.1f} % that asteroid)")
    print(f"asteroids at true SNR 4 to 5        {f['faint_asteroids']}: found as faint DIASources"
          f" {100 * f['faint_asteroids_found']:.1f} %")
    print(f"Objects on the template             {f['objects']} ({f['objects_galaxies']} galaxies);"
          f" {f['objects_matched']} at a true object, {100 * f['objects_classified']:.1f} %"
          " classified right")
    print(f"variables' DIAObjects               {f['variable_dia_objects']}: most probable Object"
          f" the variable {100 * f['variables_own']:.1f} % (median P {f['variables_own_p']:.3f})")
    print(f"hosted transients' DIAObjects       {f['hosted_dia_objects']}: nearest Object the host"
          f" {100 * f['hosts_found']:.1f} %")
    print(f"  median P of the likeliest Object  hosted {f['hosted_p']:.3g},"
          f" hostless {f['hostless_p']:.3g}")
    if f["periodic"]:
        n = f["periodic"]
        print(f"variables with a period             {n}: the true one within 1 % {100 * f['period_right'] / n:.1f} %,"
              f" a daily alias {100 * f['period_alias'] / n:.1f} %;"
              f" false-alarm probability < 1 % {100 * f['period_significant'] / n:.1f} %")
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
        if not (f["variable_dia_objects"] and f["hosted_dia_objects"]):
            print("FAILED: no variable or no hosted transient was found to match")
            return 1
        if not (f["variables_own"] >= 0.90 and f["hosts_found"] >= 0.80):
            print("FAILED: variables must be their own most probable Object (>= 90 %) and"
                  " hosted transients find their host as the nearest Object (>= 80 %)")
            return 1
        if not f["transients_doubted"] <= 0.05:
            print("FAILED: more than 5 % of the transients' DIASources deemed unreliable")
            return 1
        if f["trails"] >= 10 and not abs(f["trail_pull"]) <= 1.0:
            print("FAILED: the asteroids' fitted trail lengths are biased (median pull beyond 1)")
            return 1
        if f["still"] >= 10 and f["trails"] >= 10 and not f["still_trail"] < 0.5 * f["trail_true"]:
            print("FAILED: transients, which do not move, were fitted trails as long as half"
                  " the asteroids' motion")
            return 1
        if f["ss_h"] >= 10 and not abs(f["ss_h_diff"]) <= 0.1:
            print("FAILED: the SSObjects' H differ from the truth by more than 0.1 mag")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
