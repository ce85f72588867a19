"""What the report shows and how: the metrics with their headers, the keys that never
separate settings, the noise-floor rows, and the marks for a metric that was not computed,
does not apply or was not recorded."""

from __future__ import annotations

#: The metrics reported, with the header and the number of decimals used in md and tex.
METRICS: dict[str, tuple[str, int]] = {
    "label_accuracy": ("label acc.", 3),
    "label_floor": ("label floor", 3),  # a blind flat guess's label acc. (the label noise floor)
    "count_accuracy": ("count acc.", 3),
    "psnr_mean": ("PSNR (dB)", 2),
    "ssim_mean": ("SSIM", 3),
    "lpips_mean": ("LPIPS", 3),
}
#: Columns that are references for another metric: tabled, drawn inside that metric's figure.
REFERENCE_METRICS = ("label_floor",)
#: Override keys that never separate groups (seed: a repeat; first_trial: a part of the same
#: trials; the others change no result).
IGNORED_KEYS = ("seed", "first_trial", "resume", "threads")
REPORT_NAME = "report"
MARKERS = "osD^vP*X"  # lines that coincide stay visible
MONTAGE_ROWS = 12  # grids per montage page
ABSENT = "absent"  # LPIPS not computed (no AlexNet weights): said, never shown as a number
NOT_APPLICABLE = "-"  # the metric does not exist for this group (e.g. PSNR with attack=none)
NOT_RECORDED = "not recorded"  # a noise floor that no trial of the table recorded (runs made before it existed)
UNREADABLE = "unreadable"  # the status of a job whose metrics.json cannot be used
#: The noise-floor rows under an image table: metrics.json's per-trial ``noise_floor`` key, its
#: reference and the row's label; and which table column shows which of its scores.
NOISE_FLOORS: dict[str, str] = {"uniform": "noise floor: uniform", "mean_image": "noise floor: mean image"}
NOISE_FLOOR_COLUMNS: dict[str, str] = {"psnr_mean": "psnr", "ssim_mean": "ssim"}
