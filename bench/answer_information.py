"""Do a model's sampled answers carry information about the row they answer? GRPO can only sharpen
a completion that is right *for looking*. This samples N completions per held-out row of the
default run (temperature 1, as training samples) under each prompt, and compares the right answers
with the right answers the same answers would score if each were given to another row of the same
kind (a seeded permutation, the baseline measured in the same run): "informative" is the excess.

    .venv/bin/python bench/answer_information.py [--model DIR] [--n 8] [--prompts grit,direct,boxes-first]
        [--set key=value ...]

Without --model it measures the default config's base model (built into the cache on first use).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grit_ray.config import load_config  # noqa: E402
from grit_ray.data.rows import RowRules, RowStream, materialise_sources  # noqa: E402
from grit_ray.grit.prompts import judged_answer  # noqa: E402
from grit_ray.judge.baseline import answer_information  # noqa: E402
from grit_ray.models.tiny import cached_tiny_model  # noqa: E402
from grit_ray.workers.cluster import ray_session  # noqa: E402
from grit_ray.workers.rollout import PromptRequest, RolloutPool  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=8, help="samples per row")
    ap.add_argument("--prompts", default="grit,direct,boxes-first")
    ap.add_argument("--set", dest="overrides", nargs="+", default=[])
    args = ap.parse_args()
    print("| prompt | answer kind | samples | answered | right | right if shuffled (95th pct) | informative |")
    print("|---|---|---|---|---|---|---|")
    for prompt in args.prompts.split(","):
        cfg = load_config(overrides=[f"prompt.template={prompt}", "rollout.temperature=1.0", *args.overrides])
        model = args.model or str(cached_tiny_model(cfg.model.tiny, log=print))
        with tempfile.TemporaryDirectory() as tmp:
            _, evals = materialise_sources(cfg.data, Path(tmp))
            rows = list(RowStream(evals, RowRules.from_config(cfg.data), cfg.data.bad_rows))
            with ray_session(cfg.resources.ray_address):
                groups = RolloutPool(cfg, model).generate(
                    [PromptRequest(row=r, group_id=i, n=args.n) for i, r in enumerate(rows)])
        pairs = [(g.row.answer, judged_answer(c.text, cfg.prompt.template)) for g in groups for c in g.completions]
        for info in answer_information(pairs):
            print(f"| {prompt} | {info.kind.value} | {info.samples} | {info.answered} | {info.right} | "
                  f"{info.shuffled:.1f} ({info.shuffled_p95:.0f}) | {info.informative:+.1f} "
                  f"({100 * info.informative / info.samples:+.1f} pts) |", flush=True)


if __name__ == "__main__":
    main()
