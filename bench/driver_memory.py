"""Driver memory against dataset size: the same 3-step training run on 20, 7,000 and 100,000
synthetic rows given as ordinary data files (as a user's real data would be). The driver streams
rows through a bounded shuffle buffer, so its peak RSS should not follow the row count.

    .venv/bin/python bench/driver_memory.py [--sizes 20,7000,100000]

Peak RSS is the driver process's ``ru_maxrss`` as logged in metrics.jsonl (``driver/rss_mb``);
the baseline is the 20-row run, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from grit_ray.config import SynthSpec
from grit_ray.data.synth import write_synth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,7000,100000")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grit-mem-bench-"))
    results = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            t = time.perf_counter()
            data = write_synth(work / f"data-{n}", SynthSpec(n=n, seed=0))
            gen_s = time.perf_counter() - t
            run = work / f"run-{n}"
            train_source = json.dumps([{"path": str(data), "images": str(data.parent / "images")}])
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "grit_ray.cli", "train", "--steps", "3", "--run-dir", str(run),
                            "--set", "data.synthetic=null", "--set", f"data.train={train_source}",
                            "--set", "checkpoint.save_final=false", "--set", "rollout.max_new_tokens=16",
                            "--set", "logging.progress=false"], check=True, capture_output=True)
            rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            results.append((n, rows[-1]["driver/rss_mb"], gen_s, time.perf_counter() - t))
            print(f"measured {n} rows: driver peak RSS {rows[-1]['driver/rss_mb']:.0f} MB", flush=True)
            shutil.rmtree(data.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0][1]
    print("\n| training rows | driver peak RSS MB | vs 20 rows | data written s | 3-step run s |")
    print("|---|---|---|---|---|")
    for n, rss, gen_s, run_s in results:
        print(f"| {n:,} | {rss:.0f} | {rss / base:.2f}x | {gen_s:.0f} | {run_s:.0f} |")


if __name__ == "__main__":
    main()
