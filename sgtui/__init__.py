"""sgtui: benchmark RL post-training backends (SGLang vs vLLM, each with Megatron-core) live in a terminal."""

__version__ = "0.1.0"
