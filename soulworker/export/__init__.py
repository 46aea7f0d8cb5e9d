"""The ChatGPT export as bytes: what it is, where its conversations are, that it is safe to read.

``sniff`` tells ZIP, gzip and JSON apart; ``zip_members`` finds ``conversations.json`` and its
shards; ``reader`` streams one raw conversation at a time (ijson) in constant memory; ``guard``,
``scan`` and ``relay`` check every byte against hostile nesting, bombs and damage (the scan runs
in a helper process); ``numbers`` reads numbers too large for Python; ``errors`` says what is
wrong with an export. See docs/export-format.md and docs/hostile-uploads.md.
May import: the ground floor only (``soulworker.errors``, ``logs``, ``settings``).
"""
