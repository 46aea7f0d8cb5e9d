"""What the model is asked and what is made of its answers: the soulprint and the MEMORY.

``sampler`` and ``persona`` choose what the quick pass reads; ``prompts`` words every request;
``section_request`` asks for the five sections (the quick pass, and the finish's v2);
``sections`` stores and renders them; ``full_pass_plan`` batches the chunks within the token
budget; ``memory`` merges facts into MEMORY; ``cost`` and ``cost_estimate`` price a job;
``degraded`` records what a model answer needed mended (docs/model-answers.md).
May import: the ground floor, ``soulworker.llm`` and ``soulworker.conversations``.
"""
