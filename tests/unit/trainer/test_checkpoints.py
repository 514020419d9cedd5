"""Which checkpoint directories a run keeps: the newest complete ones; never a crash's leftovers."""

from grit_ray.trainer.checkpoints import CHECKPOINTS, DRIVER_STATE, latest_checkpoint, prune_checkpoints


def _ckpt(run_dir, step, complete=True):
    d = run_dir / CHECKPOINTS / f"step-{step:06d}"
    (d / "learner").mkdir(parents=True)
    if complete:
        (d / DRIVER_STATE).write_text("{}")
    return d


def test_prune_keeps_the_newest_complete_and_removes_incomplete(tmp_path):
    for step in (2, 4, 6):
        _ckpt(tmp_path, step)
    crashed_old = _ckpt(tmp_path, 3, complete=False)  # a save cut short by a crash
    crashed_new = _ckpt(tmp_path, 8, complete=False)
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step-000002", "step-000003", "step-000008"]
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == ["step-000004", "step-000006"]
    assert not crashed_old.exists() and not crashed_new.exists()
    assert latest_checkpoint(tmp_path).name == "step-000006"
