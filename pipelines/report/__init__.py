"""The data-quality report: ``gristmill report RUN_DIR`` (and the end of ``gristmill run``) writes
``report/index.html`` and ``report/stats.json`` from the run directory's data alone;
``--compare RUN_B`` puts two runs side by side."""

from pipelines.report.builder import Report, build_report
from pipelines.report.compare import build_compare

__all__ = ["Report", "build_report", "build_compare"]
