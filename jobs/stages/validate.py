"""Stage 0, validate: read every source, sort each row into kept or rejected, write both.

Outputs: ``items``, ``users`` and ``suppressions`` (when configured), ``interactions`` in the contract's
columns, and
``rejects`` (source, row_ordinal, id, reason, raw). For every source rows in = kept + rejected.
"""

from __future__ import annotations

import functools
import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from segrec.jobs.context import RunContext
from segrec.jobs.errors import InputError
from segrec.jobs.sources import inputs as sources
from segrec.jobs.sources.demo_data import ensure_movielens

log = logging.getLogger("segrec")


def read_checked(ctx: RunContext) -> dict[str, DataFrame]:
    """Read every source ``ctx``'s config names and check its mapped columns before any row is processed."""
    inputs = ctx.config.inputs
    raw = {}
    for name in ("items", "users", "interactions", "suppressions"):
        source = getattr(inputs, name)
        if source is None:
            continue
        df = sources.read_source(ctx.spark, name, source)
        sources.check_columns(df, name, source, sources.roles_for(name, source))
        raw[name] = df
    return raw


def _kept_or_fail(
    name: str,
    counts: sources.SourceCounts,
    max_share: float = 1.0,
    quotes: list[sources.UnclosedQuote] | None = None,
    earlier: list[str] | None = None,
) -> None:
    """Stop the run when source ``name`` kept no row, or when its rejected share exceeds ``max_share``
    (that looks like a mapping mistake: a wrong id column, a wrong timestamp unit). The lines its own
    unclosed ``quotes`` swallowed count as rejected rows; the message names them first, and before
    everything the ``earlier`` sources' broken rows (items read short make interactions unknown_item)."""
    swallowed = sum(quote.swallowed for quote in quotes or [])
    rows_in, rejected = counts.rows_in + swallowed, counts.rejected + swallowed
    causes = [*(earlier or []), *(quote.describe(name) for quote in quotes or [])]
    lead = ". ".join(causes) + (". Fix that first: what follows may come from it. " if causes else "")
    detail = ", ".join(f"{r}={n}" for r, n in sorted(counts.rejected_by_reason.items())) or "the source is empty"
    if counts.kept == 0:
        raise InputError(f"{lead}{name}: no valid rows left ({rows_in} read; rejected: {detail})")
    if rows_in and rejected / rows_in > max_share:
        top = max(sorted(counts.rejected_by_reason), key=lambda reason: counts.rejected_by_reason[reason])
        raise InputError(
            f"{lead}{name}: {rejected} of {rows_in} rows rejected ({rejected / rows_in:.0%}, above "
            f"inputs.{name}.max_reject_share {max_share:g}); most are {top} ({counts.rejected_by_reason[top]}). "
            f"Check the column mapping and units for that reason (rejected: {detail})"
        )


def run(ctx: RunContext) -> dict[str, sources.SourceCounts]:
    """Read, check and write the three inputs for the run ``ctx`` (config, session, output store,
    manifest): writes ``items``, ``users``, ``interactions`` and ``rejects``. Returns each source's
    counts (rows in, kept, rejected by reason). Raises InputError (exit 2) when a source cannot be read
    or rejects more than its ``max_reject_share``."""
    config = ctx.config
    if config.demo.dataset == "movielens100k":
        ensure_movielens(config.demo.dir)
    raw = read_checked(ctx)

    annotated: dict[str, DataFrame] = {}
    counts: dict[str, sources.SourceCounts] = {}
    quotes: dict[str, list[sources.UnclosedQuote]] = {}

    def broken_before(name: str) -> list[str]:
        """What earlier sources lost to unclosed quotes, for the messages of ``name``'s checks."""
        return [quote.describe(other) for other, found in quotes.items() if other != name for quote in found]

    def settle(name: str, frame: DataFrame) -> DataFrame:
        # Cached: the reason counts, the kept rows and the rejects all come from one computation.
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
        annotated[name] = frame
        try:
            counts[name] = sources.count_reasons(frame)  # the first read of the source's rows
        except Exception as exc:
            raise sources.unreadable(name, getattr(config.inputs, name), exc) from None
        if getattr(config.inputs, name).format == "csv" and counts[name].rejected_by_reason.get(sources.MALFORMED_ROW):
            quotes[name] = sources.unclosed_quotes(ctx.spark, frame)
            for quote in quotes[name]:
                log.warning("%s (the swallowed records are in its reject's raw text)", quote.describe(name))
        return frame

    with ctx.manifest.stage("validate") as figures:
        items = settle("items", sources.annotate_items(raw["items"], config.inputs.items, config.text.pii))
        _kept_or_fail("items", counts["items"], config.inputs.items.max_reject_share, quotes.get("items"))
        known_items = sources.split(items, "items")[0].select("item_id")

        known_users = None
        if "users" in raw and config.inputs.users is not None:
            users = settle("users", sources.annotate_users(raw["users"], config.inputs.users, config.text.pii))
            if counts["users"].rows_in:
                _kept_or_fail(
                    "users",
                    counts["users"],
                    config.inputs.users.max_reject_share,
                    quotes.get("users"),
                    broken_before("users"),
                )
            if config.inputs.users.complete:
                # Only a complete users source can say that an interaction's user does not exist.
                known_users = sources.split(users, "users")[0].select("user_id")

        settle(
            "interactions",
            sources.annotate_interactions(
                raw["interactions"], config.inputs.interactions, known_items, known_users, config.text.pii
            ),
        )
        if "suppressions" in raw and config.inputs.suppressions is not None:
            # Every row is kept or rejected like the others; an empty list is allowed (nobody opted out).
            settle("suppressions", sources.annotate_suppressions(raw["suppressions"], config.inputs.suppressions))
            if counts["suppressions"].rows_in:
                _kept_or_fail(
                    "suppressions",
                    counts["suppressions"],
                    config.inputs.suppressions.max_reject_share,
                    quotes.get("suppressions"),
                )
        # An empty interactions source is allowed when users have texts (text-only profiles); one whose
        # rows were all (or mostly) rejected is a mistake, whatever else remains.
        events = counts["interactions"]
        if events.rows_in or "users" not in counts or counts["users"].kept == 0:
            _kept_or_fail(
                "interactions",
                events,
                config.inputs.interactions.max_reject_share,
                quotes.get("interactions"),
                broken_before("interactions"),
            )

        all_rejected = []
        for name, frame in annotated.items():
            kept, rejected = sources.split(frame, name)
            ctx.store.write(kept, name)
            ctx.manifest.record_output(name)
            all_rejected.append(rejected)
        ctx.store.write(functools.reduce(DataFrame.unionByName, all_rejected), "rejects")
        ctx.manifest.record_output("rejects")

        for name, c in counts.items():
            if c.rejected_by_reason.get(sources.MALFORMED_ROW):
                log.warning(
                    "source %s: %d malformed row(s) (too few or too many fields, or an unclosed quote that "
                    "ran over the lines after it): in rejects with their text as read",
                    name,
                    c.rejected_by_reason[sources.MALFORMED_ROW],
                )
            found = [{"file": q.file, "line": q.line, "lines_swallowed": q.swallowed} for q in quotes.get(name, [])]
            ctx.manifest.record_source(name, {**c.as_dict(), **({"unclosed_quotes": found} if found else {})})
            figures[f"{name}_kept"] = c.kept
            figures[f"{name}_rejected"] = c.rejected
            log.info(
                "source %s: rows_in=%d kept=%d rejected=%d %s",
                name,
                c.rows_in,
                c.kept,
                c.rejected,
                " ".join(f"{r}={n}" for r, n in sorted(c.rejected_by_reason.items())),
            )
    for frame in annotated.values():
        frame.unpersist()
    return counts
