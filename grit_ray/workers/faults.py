"""Actor deaths and hangs, as the driver sees them (docs/cluster.md, "Failure model").

Ray restarts a dead rollout worker or reward actor by itself (``max_restarts``); the pools wait
for it here and hand its unfinished work out again. A call that does not answer within its
timeout is a hang, raised naming the actor, and handled like a death.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any


class ActorHangError(RuntimeError):
    """An actor did not answer within its timeout."""


class ActorLostError(RuntimeError):
    """An actor died and did not come back (restarts used up, or it stayed unreachable)."""


def is_actor_failure(exc: BaseException) -> bool:
    """A death (the process is gone) or a hang, as opposed to an error raised by the actor's code."""
    from ray.exceptions import GetTimeoutError, RayActorError

    return isinstance(exc, RayActorError | GetTimeoutError | ActorHangError | ActorLostError)


def get_all(refs: Sequence[Any], names: Sequence[str], timeout_s: float, what: str) -> list[Any]:
    """``ray.get(refs)``, failing fast: the first actor that dies raises at once (its peers may
    be blocked in a collective with it), and a call still running after ``timeout_s`` raises
    ``ActorHangError`` naming the actors it waited for (``names[i]`` made ``refs[i]``)."""
    import ray
    from ray.exceptions import RayActorError

    deadline = time.perf_counter() + timeout_s
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(deadline - time.perf_counter(), 0))
        if not ready:
            late = [n for n, r in zip(names, refs) if r in pending]
            raise ActorHangError(f"{what}: {', '.join(late)} did not answer within {timeout_s:.0f}s")
        try:
            ray.get(ready[0])  # an error raised by the actor's code surfaces here as it is
        except RayActorError as e:
            name = next(n for n, r in zip(names, refs) if r == ready[0])
            raise ActorLostError(f"{what}: {name} died ({type(e).__name__})") from e
    return ray.get(list(refs))


def wait_until_alive(actor, name: str, timeout_s: float) -> float:
    """Block until ``actor`` answers again (Ray is restarting it); returns the seconds
    waited. Raises ``ActorLostError`` if it is dead for good or not back in time."""
    import ray
    from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

    started = time.perf_counter()
    while (left := timeout_s - (time.perf_counter() - started)) > 0:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=left)  # every Ray actor answers this
            return time.perf_counter() - started
        except ActorDiedError as e:  # Ray gives this once the actor's restarts are used up
            raise ActorLostError(f"{name} died and will not be restarted: {str(e).splitlines()[0]}") from e
        except GetTimeoutError:
            break
        except RayActorError:  # unavailable while Ray restarts it
            time.sleep(0.2)
    raise ActorLostError(f"{name} did not come back within {timeout_s:.0f}s")


def unreachable(actors: Sequence[Any], names: Sequence[str], timeout_s: float = 10.0) -> list[str]:
    """The names of the actors that are dead or do not answer within ``timeout_s``."""
    import ray

    probes = [a.__ray_ready__.remote() for a in actors]
    ready, _ = ray.wait(probes, num_returns=len(probes), timeout=timeout_s)
    lost = []
    for name, probe in zip(names, probes):
        if probe not in ready:  # silent
            lost.append(name)
            continue
        try:
            ray.get(probe)
        except Exception:  # dead or restarting
            lost.append(name)
    return lost


def _pid(actor_self) -> int:
    import os

    return os.getpid()


class Incarnations:
    """The process of each actor, to notice the ones Ray restarted since the last look (a worker
    that died while idle comes back with none of its state)."""

    def __init__(self, actors: Sequence[Any]):
        self.actors = actors
        self.pids = self._probe(range(len(actors)))

    def _probe(self, indices) -> list[int | None]:
        import ray

        refs = [self.actors[i].__ray_call__.remote(_pid) for i in indices]  # every Ray actor answers this
        out: list[int | None] = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except Exception:  # restarting or dead: not the process we knew
                out.append(None)
        return out

    def restarted(self) -> list[int]:
        """Indices of the actors that answer from a new process since they were last seen (one
        still restarting is reported once it is up)."""
        now = self._probe(range(len(self.actors)))
        changed = [i for i, (old, new) in enumerate(zip(self.pids, now)) if new is not None and new != old]
        for i in changed:
            self.pids[i] = now[i]
        return changed

    def seen(self, i: int) -> None:
        """Actor ``i`` is back and set up: remember its new process."""
        self.pids[i] = self._probe([i])[0]


class FaultLog:
    """Restarts by role and the seconds they cost, reported with the step they happened in."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def record(self, role: str, seconds: float, restarts: int = 1) -> None:
        self.counts[f"faults/{role}_restarts"] += restarts
        self.counts[f"faults/{role}_lost_s"] += seconds

    def take(self) -> dict[str, float]:
        """The counts since the last call (then reset)."""
        out = {k: float(v) for k, v in self.counts.items()}
        self.counts.clear()
        return out
