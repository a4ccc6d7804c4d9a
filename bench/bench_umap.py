"""UMAP map timings: a fresh process's first map at 20,000 and 1,000,000 codes, and the map's inverse.

``run()`` returns

* ``umap_20k_fresh_s``: seconds from request to a UMAP map of 20,000 codes
  (d = 16, a mixture of 10 gaussians) in a fresh Python process, with
  ``vae_core.projection.UMAPProjection`` (imports + kNN + graph + layout +
  the inverse's index), fitted on every code (target <= 10);
* ``umap_20k_plain_fresh_s``: the same codes through plain
  ``umap.UMAP().fit`` in a fresh process, for reference (import included).
  Left out when the environment variable ``BENCH_QUICK=1`` is set;
* ``umap_1m_s``: the same in a fresh process for 1,000,000 codes (d = 8, a
  mixture of 10 gaussians, with their 10 labels): UMAP fitted on 30,000
  landmarks drawn class by class, the other 970,000 codes placed by their
  10 nearest landmarks in latent space, and the map indexed (target <= 60);
  ``umap_1m_placement_s`` is the placement's share of it;
* ``projection_inverse_70k_ms``: median time of one ``inverse`` call for a
  single map position on a UMAP map of 70,000 codes (random positions over
  the map's bounding box, inside and outside the data);
  ``projection_inverse_70k_p99_ms`` is the 99th percentile;
* ``umap_70k_fit_s``: the time of that 70,000-code fit (30 epochs: 30,000
  landmarks, 40,000 codes placed), in the same warm process.

Fresh-process figures are what every start of the program but the first on
a machine sees: numba compiles the layout kernel once and caches it on disk,
so a first child process (``warm_umap``) fills that cache before the timed
ones run (about 2 s more, once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TARGETS = {
    "umap_20k_fresh_s": ("<=", 10),
    "umap_1m_s": ("<=", 60),
}

_DATA = """
import numpy as np
def mixture(n, d=16, k=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)
"""

_WARM = """
from vae_core.projection import warm_umap
import json
print(json.dumps({"seconds": warm_umap()}))
"""

_OURS_20K = _DATA + """
import json, time
codes = mixture(20000)
t0 = time.perf_counter()
from vae_core.projection import UMAPProjection
xy = UMAPProjection().fit(codes)
print(json.dumps({"seconds": time.perf_counter() - t0, "n": int(xy.shape[0])}))
"""

_OURS_1M = """
import json, time
import numpy as np
rng = np.random.default_rng(0)
centres = rng.normal(0.0, 3.0, (10, 8))
labels = rng.integers(0, 10, 1_000_000)
codes = (centres[labels] + rng.normal(0.0, 1.0, (1_000_000, 8))).astype(np.float32)
t0 = time.perf_counter()
from vae_core.projection import UMAPProjection
marks = {}
def progress(fraction, message):
    marks.setdefault(message.split(":")[0], time.perf_counter())
proj = UMAPProjection(random_state=0)
xy = proj.fit(codes, labels=labels, progress=progress)
seconds = time.perf_counter() - t0
assert xy.shape == (1_000_000, 2) and len(proj.landmark_indices) == 30_000
print(json.dumps({"seconds": seconds,
                  "placement": marks["Indexing the map"] - marks["Placing the other points"]}))
"""

_PLAIN_20K = _DATA + """
import json, time, warnings
codes = mixture(20000)
t0 = time.perf_counter()
import umap
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    umap.UMAP().fit(codes)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""

_INVERSE_70K = _DATA + """
import json, time
import numpy as np
from vae_core.projection import UMAPProjection
codes = mixture(70000)
t0 = time.perf_counter()
proj = UMAPProjection(n_epochs=30, random_state=0)
xy = proj.fit(codes)
fit_s = time.perf_counter() - t0
rng = np.random.default_rng(1)
low, high = xy.min(axis=0), xy.max(axis=0)
queries = rng.uniform(low, high, size=(3000, 2))
proj.inverse(queries[:10])
times = []
for q in queries:
    t = time.perf_counter()
    proj.inverse(q[None, :])
    times.append(time.perf_counter() - t)
times = np.array(times) * 1e3
print(json.dumps({"median_ms": float(np.median(times)),
                  "p99_ms": float(np.percentile(times, 99)), "fit_s": fit_s}))
"""


def _fresh(code: str, timeout: float = 900.0) -> dict:
    """Run ``code`` in a new interpreter at the repository root; parse its last line as JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run() -> dict[str, float]:
    results: dict[str, float] = {}
    _fresh(_WARM)
    results["umap_20k_fresh_s"] = _fresh(_OURS_20K)["seconds"]
    big = _fresh(_OURS_1M)
    results["umap_1m_s"] = big["seconds"]
    results["umap_1m_placement_s"] = big["placement"]
    if os.environ.get("BENCH_QUICK") != "1":
        results["umap_20k_plain_fresh_s"] = _fresh(_PLAIN_20K)["seconds"]
    inv = _fresh(_INVERSE_70K)
    results["projection_inverse_70k_ms"] = inv["median_ms"]
    results["projection_inverse_70k_p99_ms"] = inv["p99_ms"]
    results["umap_70k_fit_s"] = inv["fit_s"]
    return results
