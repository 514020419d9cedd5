"""Bucket plans and the byte packing that carries them (pure; the transports are tested with real
engines in test_rollout.py)."""

from __future__ import annotations

import os
import pickle

import torch

from grit_ray.workers.weight_sync import (
    Bucket,
    SharedBuckets,
    TensorMeta,
    open_shared,
    pack_into,
    plan_buckets,
    unpack,
)


def _metas():
    return [TensorMeta("a", (4, 8), "torch.float32"), TensorMeta("b", (3,), "torch.bfloat16"),
            TensorMeta("c", (2, 2), "torch.int64"), TensorMeta("d", (1024,), "torch.float32"),
            TensorMeta("e", (5,), "torch.float16")]


def test_plan_respects_the_limit_keeps_order_and_isolates_large_tensors():
    metas = _metas()
    assert [m.nbytes for m in metas] == [128, 6, 32, 4096, 10]
    plan = plan_buckets(metas, bucket_mb=200 / 2**20)  # 200-byte buckets; tensors start 64-byte aligned
    assert [[m.name for m in b.tensors] for b in plan] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [b.nbytes for b in plan] == [128 + 64, 64, 4096, 64]
    assert plan[0].offsets == [0, 128]
    assert [m for b in plan for m in b.tensors] == metas
    assert len(plan_buckets(metas, bucket_mb=1)) == 1


def test_pack_and_unpack_round_trip_mixed_dtypes_bit_exactly():
    g = torch.Generator().manual_seed(0)
    metas = _metas()
    tensors = [torch.randn(4, 8, generator=g), torch.randn(3, generator=g).bfloat16(),
               torch.randint(-9, 9, (2, 2), generator=g), torch.randn(1024, generator=g),
               torch.randn(5, generator=g).half()]
    bucket = Bucket(tuple(metas))
    flat = pack_into(tensors, bucket, "cpu")
    assert flat.dtype == torch.uint8 and flat.numel() == bucket.nbytes
    out = list(unpack(flat, bucket))
    assert [n for n, _ in out] == [m.name for m in metas]
    for (_, got), want in zip(out, tensors):
        assert got.dtype == want.dtype and torch.equal(got, want)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rebuilt_broadcast_group_releases_the_old_one_and_works():
    from concurrent.futures import ThreadPoolExecutor

    from grit_ray.config import CommBackend, Device
    from grit_ray.workers.weight_sync import BroadcastChannel, ChannelSpec

    def members(port):
        return [BroadcastChannel(ChannelSpec(host="127.0.0.1", port=port, rank=r, world_size=2,
                                             backend=CommBackend.GLOO, device=Device.CPU, timeout_s=20))
                for r in range(2)]

    def round_trip(channels, value):
        with ThreadPoolExecutor(2) as pool:  # the two members meet in the store at once
            list(pool.map(lambda c: c.connect(), channels))
            bufs = [torch.full((4,), value if c.spec.rank == 0 else 0.0) for c in channels]
            list(pool.map(lambda cb: cb[0].broadcast(cb[1]), zip(channels, bufs)))
        return bufs[1]

    first = members(_free_port())
    assert torch.equal(round_trip(first, 3.0), torch.full((4,), 3.0))
    for c in first:
        c.close()
        c.close()  # idempotent
    assert all(c.group is None for c in first)  # released (aborted), not left to the garbage collector
    assert torch.equal(round_trip(members(_free_port()), 5.0), torch.full((4,), 5.0))


def test_shared_buckets_round_trip_and_release():
    named = [("a", torch.arange(6, dtype=torch.float32).reshape(2, 3)), ("b", torch.ones(5, dtype=torch.bfloat16)),
             ("c", torch.tensor([7], dtype=torch.int64))]
    shared = SharedBuckets(bucket_mb=16 / 2**20)  # 16 bytes: a bucket per tensor or two
    handles = pickle.loads(pickle.dumps(shared.share(iter(named))))  # as collective_rpc carries them
    assert len(handles) >= 2
    back = [item for h in handles for item in open_shared(h)]
    assert [n for n, _ in back] == ["a", "b", "c"] and all(torch.equal(x, y) for (_, x), (_, y) in zip(back, named))
    names = [h.path for h in handles]
    shared.release()
    assert not any(os.path.exists(n) for n in names)


def test_packed_buckets_are_shared_as_they_are():
    named = [("w", torch.randn(3, 4)), ("n", torch.arange(5))]
    [bucket] = plan_buckets([TensorMeta(n, tuple(x.shape), str(x.dtype)) for n, x in named], 1.0)
    shared = SharedBuckets(0)
    handles = pickle.loads(pickle.dumps(shared.share_packed([pack_into([x for _, x in named], bucket, "cpu")], [bucket])))
    got = list(open_shared(handles[0]))
    assert [n for n, _ in got] == ["w", "n"] and all(torch.equal(a, b) for (_, a), (_, b) in zip(got, named))
    shared.release()
    assert not os.path.exists(handles[0].path)
