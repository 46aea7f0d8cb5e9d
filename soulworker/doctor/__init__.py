"""``soulworker doctor``: check that this deployment can do its job, and say what to fix.

Each check is a small async function that returns an :class:`Outcome`: a status, a one-line
finding and, unless all is well, a hint saying what to do. :func:`run_doctor` runs them all
and returns a :class:`DoctorReport`; the CLI prints it as a list or as JSON.

Statuses and what they mean for the exit code (0 only when nothing failed):

* ``ok``: works as it should.
* ``warn``: works, but not as well as it could, or something looks wrong without stopping
  jobs: an unknown ``SOULWORKER_*`` variable (probably a typo), a transaction pooler (polling
  only), ``sslmode`` that may fall back to plain text, a public export bucket, migrations
  this version does not know, users' data reachable through Supabase's API beyond what its
  owner may read, little temp space, a model API that rate-limits right now.
* ``fail``: jobs would fail or never run: missing or invalid settings, an unreachable or too
  old database, pending migrations, a refused key, a missing bucket, an unknown model, no fast
  JSON parser, no usable temp space.
* ``skip``: not checked, with the reason: it depends on a check that failed (LISTEN needs the
  database), its settings are missing (already a configuration failure), or it does not apply
  (the model check when ``SOULWORKER_MODEL_STAGES=off``, the embeddings check when
  ``SOULWORKER_EMBED_PROVIDER=off``). A skip never changes the exit code
  by itself.

Checks are independent: each runs concurrently with the others, a failure in one never stops
another, and each has its own time limit (:data:`CHECK_TIMEOUT_SECONDS`), so doctor never
hangs on a silent host. Only ``listen``, ``migrations``, ``exposure`` and ``embeddings`` wait for
``database``.

A check asks the service it checks, through that service's own probe, what it would say: the
Storage client reads Storage's answers (``soulworker.storage.answers``, ``storage.buckets``), the
database layer describes a failed connection (``soulworker.db_failures``), the model client
explains its errors to an operator (``soulworker.llm.errors.advice_for_operator``), the embedder
says what to change (``EmbeddingError.operator_line``), the export
reader says whether its parser is usable. Doctor decides only how serious each answer is and how
to say it, so when Supabase phrases an error differently the change is made once.

Secrets never reach the output: findings are built from safe parts (host names, ports,
statuses, error codes); the database driver's own error text is passed through
``redact_text`` first; keys are described by their kind only.

Modules: :mod:`.core` (statuses, outcomes, the report, running checks with their dependencies
and time limits), :mod:`.render` (text and JSON), :mod:`.checks` (the list), and one module
per family: :mod:`.configuration`, :mod:`.database` (connection, pooler, LISTEN, migrations),
:mod:`.exposure` (with :mod:`.api_exposure`, what Supabase's API can reach), :mod:`.storage`,
:mod:`.model`, :mod:`.embeddings` (the column's length, proved by one live call),
:mod:`.machine` (the JSON parser, temp space).
May import every room below the commands; never ``cli``, ``daemon``, ``pipeline`` or ``local``.
"""

from soulworker.doctor.checks import CHECK_NAMES, CHECKS, run_doctor
from soulworker.doctor.core import (
    CHECK_TIMEOUT_SECONDS,
    Check,
    CheckResult,
    DoctorContext,
    DoctorReport,
    Outcome,
    Status,
    fail,
    ok,
    skip,
    warn,
)
from soulworker.doctor.render import render_json, render_text

__all__ = [
    "CHECKS",
    "CHECK_NAMES",
    "CHECK_TIMEOUT_SECONDS",
    "Check",
    "CheckResult",
    "DoctorContext",
    "DoctorReport",
    "Outcome",
    "Status",
    "fail",
    "ok",
    "render_json",
    "render_text",
    "run_doctor",
    "skip",
    "warn",
]
