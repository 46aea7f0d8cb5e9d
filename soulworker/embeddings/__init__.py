"""Embeddings: chunk text to unit-length vectors the app's search compares (docs/embeddings.md).

``embedder`` is the interface (:class:`Embedder`) and the machinery the providers share; the
providers are ``openai`` (any OpenAI-compatible ``/embeddings``) and ``bedrock`` (Titan Text
Embeddings V2, signed by ``sigv4``); ``factory`` builds the one the settings ask for; ``pacing``
and ``retry`` slow down under throttling without dropping anything; ``vectors`` cuts input at
the model's limit and scales vectors to unit length; ``usage`` counts tokens and dollars;
``dimensions`` reads the ``embedding`` column's length and proves the model produces it;
``errors`` are job errors with a line for the operator.
May import: the ground floor only.
"""
