"""UMAP map timings: a fresh process's first map, and the map's inverse.

``run()`` returns

* ``umap_20k_fresh_s``: seconds from request to a UMAP map of 20,000 codes
  (d = 16, a mixture of 10 gaussians) in a fresh Python process, with
  ``vae_core.projection.UMAPProjection`` (import umap + kNN + graph + layout +
  the inverse's index);
* ``umap_20k_plain_fresh_s``: the same codes through plain
  ``umap.UMAP().fit`` in a fresh process, for reference (import included).
  Left out when the environment variable ``BENCH_QUICK=1`` is set;
* ``projection_inverse_70k_ms``: median time of one ``inverse`` call for a
  single map position on a UMAP map of 70,000 codes (random positions over
  the map's bounding box, inside and outside the data);
  ``projection_inverse_70k_p99_ms`` is the 99th percentile;
* ``umap_70k_fit_s``: the time of that 70,000-code fit (30 epochs), in the
  same warm process.

Fresh-process figures assume numba's on-disk cache is already populated
(any earlier run on the machine does that); the very first import of umap on
a machine compiles pynndescent for about 20 s more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_DATA = """
import numpy as np
def mixture(n, d=16, k=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0.0, 1.0, (n, d))).astype(np.float32)
"""

_OURS_20K = _DATA + """
import json, time
codes = mixture(20000)
t0 = time.perf_counter()
from vae_core.projection import UMAPProjection
xy = UMAPProjection().fit(codes)
print(json.dumps({"seconds": time.perf_counter() - t0, "n": int(xy.shape[0])}))
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
    results["umap_20k_fresh_s"] = _fresh(_OURS_20K)["seconds"]
    if os.environ.get("BENCH_QUICK") != "1":
        results["umap_20k_plain_fresh_s"] = _fresh(_PLAIN_20K)["seconds"]
    inv = _fresh(_INVERSE_70K)
    results["projection_inverse_70k_ms"] = inv["median_ms"]
    results["projection_inverse_70k_p99_ms"] = inv["p99_ms"]
    results["umap_70k_fit_s"] = inv["fit_s"]
    return results
