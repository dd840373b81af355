# Regenerates shapiro-wilk-reference.json (scipy 1.17.1): python3 test/detection/shapiro-wilk-reference.py
import json, numpy as np
from scipy.stats import shapiro
rng = np.random.default_rng(20261125)
cases = []
def add(name, x):
    x = np.asarray(x, dtype=float)
    r = shapiro(x)
    cases.append({"name": name, "x": [float(v) for v in x], "w": float(r.statistic), "p": float(r.pvalue)})
add("n3-hand", [1, 2, 4])
add("n3-linear", [1, 2, 3])
for n in [4, 5, 6, 7, 11, 12, 20, 50]:
    add(f"normal-n{n}", np.round(rng.normal(size=n), 4))
    add(f"expo-n{n}", np.round(rng.exponential(size=n), 4))
for n in [100, 500, 5000]:
    add(f"normal-n{n}", np.round(rng.normal(size=n), 4))
    add(f"uniform-n{n}", np.round(rng.uniform(size=n), 4))
    add(f"bimodal-n{n}", np.round(np.concatenate([rng.normal(0, 0.1, n // 2), rng.normal(5, 1, n - n // 2)]), 4))
add("lognormal-n300", np.round(rng.lognormal(size=300), 4))
json.dump(cases, open(__file__.replace(".py", ".json"), "w"))
