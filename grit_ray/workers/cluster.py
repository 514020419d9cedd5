"""The one way grit-ray joins a Ray cluster (training, evaluation and the demo alike)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

NAMESPACE = "grit-ray"


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (``resources.ray_address``: None starts a local one,
    "auto" joins the cluster this process runs in) and disconnect on exit, whatever happens inside."""
    import ray

    ray.init(address=address, include_dashboard=False, namespace=NAMESPACE, log_to_driver=False,
             ignore_reinit_error=True)
    try:
        yield
    finally:
        ray.shutdown()
