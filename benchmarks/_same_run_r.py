"""Time an lme4 / glmer fit in the same run as studykit's (used by bench_lmm / bench_glmm).

The data are written to a temporary CSV, ``Rscript`` reads it (outside the timing), converts
the named factor columns, and times ``runs`` fits with ``system.time``; the median elapsed
seconds are returned. Returns ``None`` when ``Rscript`` or lme4 is not available.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

R_TEMPLATE = """
suppressPackageStartupMessages(library(lme4))
d <- read.csv("{csv}")
for (v in c({factors})) d[[v]] <- factor(d[[v]])
{levels}
fit1 <- function() {call}
invisible(fit1())
t <- replicate({runs}, system.time(fit1())[["elapsed"]])
cat(median(t), "\\n")
"""


def r_median_seconds(
    data: pd.DataFrame,
    call: str,
    *,
    factors: list[str],
    levels: dict[str, list[str]] | None = None,
    runs: int = 3,
    timeout: float = 900.0,
) -> float | None:
    """Median wall-clock seconds of ``call`` (R code using the data frame ``d``), or None."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "data.csv"
        data.to_csv(csv, index=False)
        lv = "\n".join(
            f"d${k} <- factor(d${k}, levels = c({', '.join(repr(x) for x in v)}))"
            for k, v in (levels or {}).items()
        )
        script = R_TEMPLATE.format(
            csv=csv.as_posix(),
            factors=", ".join(f'"{f}"' for f in factors),
            levels=lv,
            call=call,
            runs=runs,
        )
        (Path(tmp) / "t.R").write_text(script)
        try:
            out = subprocess.run(
                ["Rscript", str(Path(tmp) / "t.R")],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=True,
            )
        except (subprocess.SubprocessError, OSError):
            return None
    try:
        return float(out.stdout.split()[-1])
    except (ValueError, IndexError):
        return None
