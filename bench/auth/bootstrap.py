"""Bootstrap 95% interval of the p50 differences (b-a, c-a) over all rounds, resampling within each round."""
import csv, math, random
rows = list(csv.DictReader(open(__import__("os").environ["AUTH_OUT"] + "/joined.tsv"), delimiter="\t"))
def med(xs):
    xs = sorted(xs); return xs[max(1, math.ceil(len(xs) / 2)) - 1]
random.seed(1)
for col in ("curl_ttfb_ms", "log_first_item_ms"):
    g = {(r["round"], r["cfg"]): [] for r in rows}
    for r in rows: g[(r["round"], r["cfg"])].append(float(r[col]))
    for other in "bc":
        ds = []
        for _ in range(2000):
            s = {k: [random.choice(v) for _ in v] for k, v in g.items()}
            pool = lambda c: [x for (rd, cc), v in s.items() if cc == c for x in v]
            ds.append(med(pool(other)) - med(pool("a")))
        ds.sort()
        print(f"{col:18s} {other}-a p50 diff 95% CI [{ds[50]:+.2f}, {ds[1949]:+.2f}] ms")
