"""The test kit: support for the tests, the benchmarks (bench/) and the examples (examples/).

Fakes of the services the worker talks to (a Supabase Storage server, an Anthropic Messages API
server, both on loopback), a deterministic generator of ChatGPT exports, builders of hostile
uploads, a scripted job handler and an in-memory job store for the queue alone, and the finding
of a PostgreSQL server with a scratch database per test or run. It ships beside the code so
benchmarks and examples need not import the test suite; the product never imports it (an
import-linter contract in pyproject.toml, docs/architecture.md). Everything here needs only the
main dependencies; ``postgres`` tries testcontainers (the ``dev`` extra) only when it is
installed and no server was found otherwise.
"""
