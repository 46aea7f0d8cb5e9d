"""The model: one structured-output call, judged, retried, costed and logged.

``client`` sends a request and judges its answer against ``schemas`` (rules in ``json_schema``,
the companion's name in ``ai_name``); ``retry`` is the one retry policy; ``errors`` maps the
API's failures and explains them to an operator; ``pricing``, ``usage`` and ``models`` count
tokens and dollars; ``delimit`` wraps a person's data so it stays data. See
docs/model-answers.md.
May import: the ground floor only.
"""
