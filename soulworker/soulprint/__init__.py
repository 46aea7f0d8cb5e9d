"""What the model is asked and what is made of its answers: the soulprint and the MEMORY.

``sampler`` and ``persona`` choose what the quick pass reads; ``prompts`` words every request;
``sections`` stores and renders the five sections; ``full_pass_plan`` batches the chunks within
the token budget; ``memory`` merges facts into MEMORY; ``cost`` and ``cost_estimate`` price a job;
``degraded`` records what a model answer needed mended (docs/model-answers.md).
May import: the ground floor, ``soulworker.llm`` and ``soulworker.conversations``.
"""
