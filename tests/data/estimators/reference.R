# R reference for studykit.estimators (difference in differences, constrained baseline (cLDA),
# Kenward & Roger 2010 ANCOVA, post-only) on SIMULATED crossover data.
# Run from the repository root:  Rscript tests/data/estimators/reference.R
# Writes tests/data/estimators/reference.csv. The data preparation (window, derived columns,
# baseline covariates) is written here independently of the Python code.
suppressPackageStartupMessages({
  library(lme4); library(lmerTest); library(emmeans); library(pbkrtest)
})
emm_options(lmerTest.limit = 1e6, pbkrtest.limit = 1e6)
here <- "tests/data/estimators"

prep <- function(d, y, window) {
  d <- d[d$night %in% window & !is.na(d[[y]]), ]
  d$y <- d[[y]]
  d$treatment <- factor(d$treatment, levels = c("placebo", "ketamine"))
  d$night <- factor(d$night, levels = window)
  d$period <- factor(d$period, levels = c(1, 2))
  d$pp <- interaction(d$participant_id, d$period, drop = TRUE)
  d
}

ddfs <- c(satterthwaite = "satterthwaite", "kenward-roger" = "kenward-roger")
contest_ddf <- c(satterthwaite = "Satterthwaite", "kenward-roger" = "Kenward-Roger")

row_out <- function(case, est, ddf, e, se, df, lo, hi, p) {
  data.frame(case = case, estimator = est, df_method = ddf, estimate = e, std_error = se,
             df = df, p_value = p, conf_low = lo, conf_high = hi)
}

emm_diff <- function(fit, w, ddf, by_night) {
  spec <- if (by_night) ~ treatment * night else ~ treatment
  em <- if (is.na(ddf)) emmeans(fit, spec) else emmeans(fit, spec, lmer.df = ddf)
  s <- summary(contrast(em, list(c1 = w)), infer = c(TRUE, TRUE))
  s
}

gaussian_case <- function(case, d0, y, window, levels) {
  out <- list()
  d <- prep(d0, y, window)
  post <- window[-1]
  nested <- length(post) > 1
  # grid order of emmeans(~ treatment * night): treatment varies fastest
  w_grid <- function(nights, baseline) {
    w <- matrix(0, nrow = 2, ncol = length(nights), dimnames = list(c("placebo", "ketamine"), nights))
    for (t in levels) {
      w["ketamine", t] <- w["ketamine", t] + 1 / length(levels)
      w["placebo", t] <- w["placebo", t] - 1 / length(levels)
      if (!is.null(baseline)) {
        w["ketamine", baseline] <- w["ketamine", baseline] - 1 / length(levels)
        w["placebo", baseline] <- w["placebo", baseline] + 1 / length(levels)
      }
    }
    as.vector(w)
  }
  # DiD
  fit <- lmer(y ~ treatment * night + period + (1 | participant_id) + (1 | pp), data = d, REML = TRUE)
  for (k in names(ddfs)) {
    s <- emm_diff(fit, w_grid(window, window[1]), ddfs[[k]], TRUE)
    out[[length(out) + 1]] <- row_out(case, "did", k, s$estimate, s$SE, s$df, s$lower.CL, s$upper.CL, s$p.value)
  }
  # cLDA: indicators of ketamine on each post night
  for (t in post) d[[paste0("tx_", t)]] <- as.numeric(d$treatment == "ketamine" & d$night == t)
  f <- as.formula(paste("y ~ night + period +", paste0("tx_", post, collapse = " + "),
                        "+ (1 | participant_id) + (1 | pp)"))
  fit <- lmer(f, data = d, REML = TRUE)
  L <- setNames(rep(0, length(fixef(fit))), names(fixef(fit)))
  L[paste0("tx_", levels)] <- 1 / length(levels)
  for (k in names(ddfs)) {
    ct <- contest(fit, L, joint = FALSE, ddf = contest_ddf[[k]], confint = TRUE, level = 0.95)
    out[[length(out) + 1]] <- row_out(case, "clda", k, ct$Estimate, ct$`Std. Error`, ct$df,
                                      ct$lower, ct$upper, ct$`Pr(>|t|)`)
  }
  # Kenward-Roger 2010 ANCOVA and post-only: post nights; baseline covariates per period
  base <- d[d$night == window[1], c("participant_id", "period", "y")]
  names(base)[3] <- "bl"
  base$bl_mean <- ave(base$bl, base$participant_id)
  base$bl_within <- base$bl - base$bl_mean
  dp <- d[d$night %in% post, ]
  dp$night <- factor(as.character(dp$night), levels = post)
  da <- merge(dp, base, by = c("participant_id", "period"))
  for (est in c("ancova", "post_only")) {
    dd <- if (est == "ancova") da else dp
    cov <- if (est == "ancova") "+ bl_within + bl_mean" else ""
    if (nested) {
      f <- as.formula(paste("y ~ treatment + period + night + treatment:night", cov,
                            "+ (1 | participant_id) + (1 | pp)"))
    } else {
      f <- as.formula(paste("y ~ treatment + period", cov, "+ (1 | participant_id)"))
    }
    fit <- lmer(f, data = dd, REML = TRUE)
    for (k in names(ddfs)) {
      w <- if (nested) w_grid(post, NULL) else c(-1, 1)
      s <- emm_diff(fit, w, ddfs[[k]], nested)
      out[[length(out) + 1]] <- row_out(case, est, k, s$estimate, s$SE, s$df, s$lower.CL, s$upper.CL, s$p.value)
    }
  }
  do.call(rbind, out)
}

count_case <- function(case, d0, y, window, levels) {
  out <- list()
  d <- prep(d0, y, window)
  post <- window[-1]
  ctrl <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
  fit <- glmer(y ~ treatment * night + period + (1 | participant_id), data = d, family = poisson, control = ctrl)
  w <- matrix(0, 2, length(window), dimnames = list(c("placebo", "ketamine"), window))
  for (t in levels) { w["ketamine", t] <- 1; w["placebo", t] <- -1; w["ketamine", window[1]] <- -1; w["placebo", window[1]] <- 1 }
  s <- summary(contrast(emmeans(fit, ~ treatment * night), list(c1 = as.vector(w))), infer = c(TRUE, TRUE))
  out[[1]] <- row_out(case, "did", "z", s$estimate, s$SE, Inf, s$asymp.LCL, s$asymp.UCL, s$p.value)
  for (t in post) d[[paste0("tx_", t)]] <- as.numeric(d$treatment == "ketamine" & d$night == t)
  f <- as.formula(paste("y ~ night + period +", paste0("tx_", post, collapse = " + "), "+ (1 | participant_id)"))
  fit <- glmer(f, data = d, family = poisson, control = ctrl)
  cf <- summary(fit)$coefficients[paste0("tx_", levels[1]), ]
  q <- qnorm(0.975)
  out[[2]] <- row_out(case, "clda", "z", cf[1], cf[2], Inf, cf[1] - q * cf[2], cf[1] + q * cf[2], cf[4])
  dp <- d[d$night %in% post, ]
  dp$night <- factor(as.character(dp$night), levels = post)
  fit <- glmer(y ~ treatment + period + night + treatment:night + (1 | participant_id), data = dp,
               family = poisson, control = ctrl)
  w <- matrix(0, 2, length(post), dimnames = list(c("placebo", "ketamine"), post))
  w["ketamine", levels[1]] <- 1; w["placebo", levels[1]] <- -1
  s <- summary(contrast(emmeans(fit, ~ treatment * night), list(c1 = as.vector(w))), infer = c(TRUE, TRUE))
  out[[3]] <- row_out(case, "post_only", "z", s$estimate, s$SE, Inf, s$asymp.LCL, s$asymp.UCL, s$p.value)
  do.call(rbind, out)
}

demo <- read.csv(file.path(here, "demo_nights.csv"), stringsAsFactors = FALSE)
generic <- read.csv(file.path(here, "generic_crossover.csv"), stringsAsFactors = FALSE)
res <- rbind(
  gaussian_case("demo_n3_post1", demo, "n3_min", c("baseline", "post1", "post2"), "post1"),
  gaussian_case("demo_n3_single", demo, "n3_min", c("baseline", "post1"), "post1"),
  gaussian_case("generic_mean_post", generic, "n3_min", c("baseline", "post1", "post2"), c("post1", "post2")),
  gaussian_case("generic_single", generic, "n3_min", c("baseline", "post1"), "post1"),
  count_case("demo_awakenings_poisson", demo, "n_awakenings", c("baseline", "post1", "post2"), "post1")
)
write.csv(res, file.path(here, "reference.csv"), row.names = FALSE)
cat(sprintf("R %s, lme4 %s, lmerTest %s, emmeans %s, pbkrtest %s\n", getRversion(),
            packageVersion("lme4"), packageVersion("lmerTest"), packageVersion("emmeans"),
            packageVersion("pbkrtest")))
