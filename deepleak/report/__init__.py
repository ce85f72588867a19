"""``deepleak report DIR [DIR ...]``: tables and figures over the jobs of sweeps and runs.

Modules: :mod:`~deepleak.report.jobs` (reading job dirs), :mod:`~deepleak.report.groups`
(settings and their statistics), :mod:`~deepleak.report.stats` (mean, std, interval),
:mod:`~deepleak.report.noise_floor`, :mod:`~deepleak.report.tables`, :mod:`~deepleak.report.figures`,
:mod:`~deepleak.report.defences`, :mod:`~deepleak.report.stages`, :mod:`~deepleak.report.build`
(the report directory and the command), and :mod:`~deepleak.report.constants`.

A *job* is any directory under the given paths that holds ``metrics.json`` or a ``status``
marker (a job that failed before its first trial has no metrics, and is still reported);
the ``previous-N/`` attempts that ``resume=true`` moved aside are not jobs.
Jobs are grouped by their Hydra overrides (``.hydra/overrides.yaml``), leaving out
``hydra.*``, ``resume``, ``threads``, ``seed`` and ``first_trial``: jobs that differ only in
the seed are repeats, jobs that differ only in ``first_trial`` are parts of one setting's
trials, and in both cases their per-trial records are pooled. Where one job sets a key that another
leaves at its default, the other's value is read from its composed config (the group
choice in ``.hydra/hydra.yaml`` for a config group, ``.hydra/config.yaml`` for a value),
so sweeps with different override lists can be reported together.

Every metric is the mean, the sample standard deviation (``ddof=1``; ``metrics.json``'s own
summary keeps ``ddof=0``) and the 95 % confidence interval of the mean, mean ± t_{0.975, n-1} ·
std / sqrt(n) (Student t, :mod:`~deepleak.report.stats`), of the per-trial values of all jobs in
a group; with one trial only the mean is shown, ``mean (n = 1)``. A table with PSNR ends in
two noise-floor rows (:mod:`~deepleak.report.noise_floor`): the PSNR/SSIM of uniform noise and
of the data set's mean image against the same private images, pooled over all its trials
(``not recorded`` for runs made before metrics.json had them). A job whose ``metrics.json``
cannot be used (corrupt, missing in a done job, wrong types) is ``unreadable``: so in the
jobs column, and named in a note under the table. The report is written into a new directory,
``OUT/report/`` (``report-1/``, ``report-2/``, ... when that exists), so nothing already
written is overwritten:

    report.md   a GitHub table (mean ± std [95% CI]), the jobs that did not finish, figures
    report.csv  one row per group: swept values, n, job counts, <metric>_mean, _std, _ci_low,
                _ci_high, _n; then the noise-floor rows (column ``reference``)
    report.tex  a booktabs tabular
    fig_<metric>.png   the metric against batch size (or the first numeric swept key), one
                       line per value of the other swept keys, error bars = 95% CI, the
                       noise floors as dashed lines
    montage.png        the ``grid.png`` of trial 0 (originals above reconstructions) of
                       each group, titled with its setting (montage-2.png ... past 12 rows)

Training jobs (``deepleak train``) under the given paths are not attack jobs: they are the
utility measurements of the defences (:mod:`~deepleak.report.defences`). When any attack job
ran under a defence, report.md gets a ``## Defences`` section (one row per defence, strength
and attacker, adaptive or naive, with epsilon and the utility of the train jobs with the same
defence), ``defences.csv``, ``fig_defence_psnr_mean.png`` and ``fig_defence_label_accuracy.png``
(leakage against strength, naive dashed) and ``fig_defence_utility.png`` (leakage against
utility). When any attack job attacked a checkpoint of known training stage (metrics.json's
``victim``, :mod:`~deepleak.report.stages`), report.md gets a ``## Training stages`` section (a
table per route, rows by epoch), ``stages.csv``, ``fig_stage_label_accuracy.png`` and
``fig_stage_psnr.png`` (leakage against epoch and against the victim's test accuracy).
"""

from deepleak.report.build import main, new_report_dir, report
from deepleak.report.constants import (
    ABSENT,
    IGNORED_KEYS,
    METRICS,
    NOISE_FLOORS,
    NOT_APPLICABLE,
    NOT_RECORDED,
    REPORT_NAME,
    UNREADABLE,
)
from deepleak.report.figures import metric_figure, montage, x_key
from deepleak.report.groups import Group, group_jobs
from deepleak.report.jobs import Job, find_jobs, read_job
from deepleak.report.noise_floor import noise_floor_rows
from deepleak.report.stats import Stat, describe
from deepleak.report.tables import csv_text, markdown_table, reported_metrics, tex_table

__all__ = [
    "ABSENT", "IGNORED_KEYS", "METRICS", "NOISE_FLOORS", "NOT_APPLICABLE", "NOT_RECORDED", "REPORT_NAME", "UNREADABLE",
    "Group", "Job", "Stat", "csv_text", "describe", "find_jobs", "group_jobs", "main", "markdown_table", "metric_figure",
    "montage", "new_report_dir", "noise_floor_rows", "read_job", "report", "reported_metrics", "tex_table", "x_key",
]
