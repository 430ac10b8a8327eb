# Reference fits for crossed / multi-term linear mixed models (lme4 + lmerTest + pbkrtest).
# Run from the repository root:  Rscript tests/data/lme4/crossed/make_crossed.R
# Writes the SIMULATED data sets and R's estimates next to this script.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
out <- "tests/data/lme4/crossed"
set.seed(20261204)
# SIMULATED inter-scorer study: 60 participants x 12 scorers, ~85% of pairs scored, two arms
np <- 60; ns <- 12
d <- expand.grid(id = sprintf("P%02d", 1:np), scorer = sprintf("S%02d", 1:ns), stringsAsFactors = FALSE)
d <- d[runif(nrow(d)) < 0.85, ]
arm_of <- setNames(rep(c("placebo", "ketamine"), length.out = np), sprintf("P%02d", 1:np))
d$arm <- arm_of[d$id]
d$x <- round(rnorm(nrow(d)), 3)
b_id <- rnorm(np, 0, 4); names(b_id) <- sprintf("P%02d", 1:np)
s_id <- rnorm(np, 0, 1); names(s_id) <- sprintf("P%02d", 1:np)
b_sc <- rnorm(ns, 0, 2); names(b_sc) <- sprintf("S%02d", 1:ns)
d$y <- round(50 + 3 * (d$arm == "ketamine") + (1.5 + s_id[d$id]) * d$x + b_id[d$id] + b_sc[d$scorer] +
  rnorm(nrow(d), 0, 3), 3)
d <- d[order(d$id, d$scorer), ]
write.csv(d, file.path(out, "crossed_sim.csv"), row.names = FALSE)
d$arm <- factor(d$arm, levels = c("placebo", "ketamine"))

data(ham, package = "lmerTest")
write.csv(ham, file.path(out, "ham.csv"), row.names = FALSE)

models <- list(
  crossed_ri = list(y ~ arm + x + (1 | id) + (1 | scorer), d),
  crossed_rs = list(y ~ arm + x + (1 + x | id) + (1 | scorer), d),
  crossed_uncor = list(y ~ arm + x + (1 + x || id) + (1 | scorer), d),
  ham = list(Informed.liking ~ Information * Gender + (1 | Consumer) + (1 | Product) + (1 | Consumer:Product), ham)
)
fixef_rows <- list(); stat_rows <- list(); vc_rows <- list()
for (nm in names(models)) {
  f <- models[[nm]][[1]]; dat <- models[[nm]][[2]]
  if (nm == "ham") {
    dat$Information <- factor(dat$Information); dat$Gender <- factor(dat$Gender)
    dat$Consumer <- factor(dat$Consumer); dat$Product <- factor(dat$Product)
  }
  for (reml in c(TRUE, FALSE)) {
    fit <- lmerTest::lmer(f, data = dat, REML = reml,
                          control = lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5)))
    key <- paste0(nm, if (reml) "_reml" else "_ml")
    co <- summary(fit)$coefficients
    kr_df <- NA; kr_se <- NA
    if (reml) {
      kr <- summary(fit, ddf = "Kenward-Roger")$coefficients
      kr_df <- kr[, "df"]; kr_se <- kr[, "Std. Error"]
    }
    fixef_rows[[key]] <- data.frame(model = key, term = rownames(co), estimate = co[, "Estimate"],
      std_error = co[, "Std. Error"], df = co[, "df"], t = co[, "t value"], p_value = co[, "Pr(>|t|)"],
      std_error_kr = kr_se, df_kr = kr_df)
    stat_rows[[key]] <- data.frame(model = key, loglik = as.numeric(logLik(fit)), sigma = sigma(fit),
      nobs = nobs(fit), singular = isSingular(fit))
    vc <- as.data.frame(VarCorr(fit))
    vc_rows[[key]] <- data.frame(model = key, grp = vc$grp, var1 = vc$var1, var2 = vc$var2,
      vcov = vc$vcov, sdcor = vc$sdcor)
  }
}
fmt <- function(x) { x[] <- lapply(x, function(v) if (is.numeric(v)) signif(v, 15) else v); x }
write.csv(fmt(do.call(rbind, fixef_rows)), file.path(out, "r_fixef.csv"), row.names = FALSE)
write.csv(fmt(do.call(rbind, stat_rows)), file.path(out, "r_fit_stats.csv"), row.names = FALSE)
write.csv(fmt(do.call(rbind, vc_rows)), file.path(out, "r_varcorr.csv"), row.names = FALSE)
writeLines(c(R.version.string, paste("lme4", packageVersion("lme4")), paste("lmerTest", packageVersion("lmerTest")),
  paste("pbkrtest", packageVersion("pbkrtest"))), file.path(out, "r_versions.txt"))
