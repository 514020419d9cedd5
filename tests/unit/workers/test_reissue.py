"""What a rollout worker is asked again after it died: exactly the completions it had not
delivered, each with the seed it had the first time."""

from grit_ray.data.rows import Row
from grit_ray.workers.rollout import PromptRequest, unfinished_requests


def _row(q: str) -> Row:
    return Row(question=q, answer="1", image=b"", width=28, height=28, bboxs=[], dataset="vsr", source=q)


def test_unfinished_requests_keep_indices_and_seeds():
    a = PromptRequest(row=_row("a"), group_id=0, n=4, seeds=(10, 11, 12, 13))
    b = PromptRequest(row=_row("b"), group_id=1, n=4, seeds=(20, 21, 22, 23))
    undelivered = {(0, 1): a, (0, 3): a, (1, 0): b}
    again = unfinished_requests(undelivered)
    assert [(r.group_id, r.wanted(), [r.seed_of(k) for k in r.wanted()]) for r in again] == [
        (0, (1, 3), [11, 13]), (1, (0,), [20])]
    assert all(r.n == 4 for r in again)  # the group keeps its size (advantages need the whole group)


def test_greedy_requests_ask_for_one_unseeded_answer():
    r = PromptRequest(row=_row("a"), group_id=0, n=4, seeds=(1, 2, 3, 4))
    assert r.wanted(greedy=True) == (0,) and r.seed_of(0, greedy=True) is None
    assert r.wanted() == (0, 1, 2, 3)
