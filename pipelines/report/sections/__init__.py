"""The report's sections, in page order. Each is ``build(ctx) -> Section | None`` (None: the run
holds none of its data). A section joins by adding a module and a line here."""

from pipelines.report.sections import (dedup, domains, evaluation, funnel, languages, lengths, pii, reasons, samples,
                                       scores, shards, summary, training)

SECTIONS = [summary.build, funnel.build, reasons.build, scores.build, languages.build, lengths.build,
            domains.build, dedup.build, pii.build, shards.build, training.build, evaluation.build, samples.build]
