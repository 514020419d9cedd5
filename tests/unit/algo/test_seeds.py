"""Per-completion sampling seeds: distinct across steps, groups and indices at any batch size,
stable across processes, and within every engine's seed range."""

from grit_ray.algo.seeds import completion_seed, group_seeds


def test_seeds_are_distinct_for_large_batches():
    # the old arithmetic scheme repeated once prompts_per_step x group_size reached 10,007
    seeds = [completion_seed(0, step, g, k) for step in range(1, 4) for g in range(2600) for k in range(4)]
    assert len(set(seeds)) == len(seeds)


def test_seeds_depend_on_every_coordinate_and_are_stable():
    base = completion_seed(7, 3, 2, 1)
    assert base == completion_seed(7, 3, 2, 1)
    assert len({base, completion_seed(8, 3, 2, 1), completion_seed(7, 4, 2, 1), completion_seed(7, 3, 3, 1),
                completion_seed(7, 3, 2, 2), completion_seed(7, 2, 3, 1)}) == 6
    assert group_seeds(7, 3, 2, 4)[1] == base


def test_seeds_fit_a_signed_64_bit_generator():
    assert all(0 <= completion_seed(s, 1, g, 0) < 2**62 for s in range(5) for g in range(200))
