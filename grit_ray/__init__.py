"""grit-ray: GRIT grounded visual reasoning (GRPO-GR) on Ray with vLLM rollouts and DeepSpeed learners."""

__version__ = "0.1.0"
