# Reference fits for multi-term, random-slope, binomial and Bernoulli GLMMs (glmer, glmmTMB).
# Run from the repository root:  Rscript tests/data/glmm/multi/make_multi.R
# Writes the SIMULATED data set and R's estimates next to this script.
suppressPackageStartupMessages({library(lme4); library(glmmTMB)})
out <- "tests/data/glmm/multi"
set.seed(20261205)
# SIMULATED crossover sleep study: 80 participants x 2 periods x 3 nights; every night scored
# by one of 10 scorers; awakenings (counts, per hour asleep), arousal epochs out of trials,
# any nightmare (yes/no)
np <- 80; ids <- sprintf("P%02d", 1:np)
d <- expand.grid(night = c("baseline", "post1", "post2"), period = 1:2, id = ids, stringsAsFactors = FALSE)
d <- d[, c("id", "period", "night")]
d$night_index <- match(d$night, c("baseline", "post1", "post2")) - 1
d$arm <- ifelse((match(d$id, ids) %% 2 == 0) == (d$period == 1), "ketamine", "placebo")
d$scorer <- sprintf("S%02d", sample(1:10, nrow(d), replace = TRUE))
d$hours <- round(runif(nrow(d), 5, 8.5), 2)
b_id <- rnorm(np, 0, 0.35); s_id <- rnorm(np, 0, 0.12); names(b_id) <- names(s_id) <- ids
b_per <- rnorm(2 * np, 0, 0.15); names(b_per) <- paste(rep(ids, each = 2), 1:2, sep = ":")
b_sc <- rnorm(10, 0, 0.25); names(b_sc) <- sprintf("S%02d", 1:10)
ket <- d$arm == "ketamine"
eta <- log(d$hours) + 0.9 - 0.25 * ket * (d$night != "baseline") + 0.05 * d$night_index +
  b_id[d$id] + s_id[d$id] * d$night_index + b_per[paste(d$id, d$period, sep = ":")] + b_sc[d$scorer]
d$awakenings <- rpois(nrow(d), exp(eta))
d$trials <- sample(8:12, nrow(d), replace = TRUE)
d$events <- rbinom(nrow(d), d$trials, plogis(-0.6 - 0.4 * ket + b_id[d$id] + b_sc[d$scorer]))
d$nightmare <- rbinom(nrow(d), 1, plogis(-0.8 - 0.6 * ket + 2 * b_id[d$id] + 2 * b_sc[d$scorer]))
write.csv(d, file.path(out, "multi_sim.csv"), row.names = FALSE)
d$arm <- factor(d$arm, levels = c("placebo", "ketamine"))
d$night <- factor(d$night, levels = c("baseline", "post1", "post2"))

ctrl <- glmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5))
models <- list(
  pois_crossed = list(awakenings ~ arm * night + offset(log(hours)) + (1 | id) + (1 | scorer), poisson, 1),
  pois_nested = list(awakenings ~ arm + night + offset(log(hours)) + (1 | id) + (1 | id:period), poisson, 1),
  pois_slope = list(awakenings ~ arm * night_index + offset(log(hours)) + (1 + night_index | id), poisson, 1),
  binom_crossed = list(cbind(events, trials - events) ~ arm + night + (1 | id) + (1 | scorer), binomial, 1),
  bern_crossed = list(nightmare ~ arm + (1 | id) + (1 | scorer), binomial, 1),
  bern_laplace = list(nightmare ~ arm + night + (1 | id), binomial, 1),
  bern_agq25 = list(nightmare ~ arm + night + (1 | id), binomial, 25)
)
fx <- list(); st <- list(); vc <- list()
for (nm in names(models)) {
  m <- models[[nm]]
  fit <- glmer(m[[1]], data = d, family = m[[2]], nAGQ = m[[3]], control = ctrl)
  co <- summary(fit)$coefficients
  fx[[paste0(nm, "_glmer")]] <- data.frame(model = nm, engine = "glmer", term = rownames(co),
    estimate = co[, 1], se = co[, 2])
  st[[paste0(nm, "_glmer")]] <- data.frame(model = nm, engine = "glmer", loglik = as.numeric(logLik(fit)),
    nb_theta = NA, nobs = nobs(fit), singular = isSingular(fit))
  v <- as.data.frame(VarCorr(fit))
  vc[[paste0(nm, "_glmer")]] <- data.frame(model = nm, engine = "glmer", grp = v$grp, var1 = v$var1,
    var2 = v$var2, vcov = v$vcov, sdcor = v$sdcor)
  if (m[[3]] == 1) {
    tmb <- glmmTMB(m[[1]], data = d, family = m[[2]])
    co <- summary(tmb)$coefficients$cond
    fx[[paste0(nm, "_tmb")]] <- data.frame(model = nm, engine = "glmmTMB", term = rownames(co),
      estimate = co[, 1], se = co[, 2])
    st[[paste0(nm, "_tmb")]] <- data.frame(model = nm, engine = "glmmTMB", loglik = as.numeric(logLik(tmb)),
      nb_theta = NA, nobs = nobs(tmb), singular = NA)
  }
}
# negative binomial (NB2), crossed: glmmTMB only
tmb <- glmmTMB(awakenings ~ arm + night + offset(log(hours)) + (1 | id) + (1 | scorer), data = d, family = nbinom2)
co <- summary(tmb)$coefficients$cond
fx[["nb_crossed_tmb"]] <- data.frame(model = "nb_crossed", engine = "glmmTMB", term = rownames(co),
  estimate = co[, 1], se = co[, 2])
st[["nb_crossed_tmb"]] <- data.frame(model = "nb_crossed", engine = "glmmTMB", loglik = as.numeric(logLik(tmb)),
  nb_theta = sigma(tmb), nobs = nobs(tmb), singular = NA)
fmt <- function(x) { x[] <- lapply(x, function(v) if (is.numeric(v)) signif(v, 15) else v); x }
write.csv(fmt(do.call(rbind, fx)), file.path(out, "r_fixef.csv"), row.names = FALSE)
write.csv(fmt(do.call(rbind, st)), file.path(out, "r_fit_stats.csv"), row.names = FALSE)
write.csv(fmt(do.call(rbind, vc)), file.path(out, "r_varcorr.csv"), row.names = FALSE)
writeLines(c(R.version.string, paste("lme4", packageVersion("lme4")), paste("glmmTMB", packageVersion("glmmTMB"))),
  file.path(out, "r_versions.txt"))

# lme4's grouseticks (crossed Poisson; HEIGHT unscaled): glmer's default fit stops below the
# maximum (logLik -987.98); glmmTMB reaches it. Its estimates are the reference.
data(grouseticks, package = "lme4")
tmb <- glmmTMB(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION), family = poisson, data = grouseticks)
co <- summary(tmb)$coefficients$cond
write.csv(fmt(data.frame(term = rownames(co), estimate = co[, 1], se = co[, 2],
  loglik = as.numeric(logLik(tmb)))), file.path(out, "grouseticks_glmmtmb.csv"), row.names = FALSE)

# lme4's cbpp (cbind binomial, one random intercept): glmer's default SEs differ from the
# inverse-Hessian SEs (glmmTMB, studykit) by ~1 %; glmmTMB's are the reference for the SEs.
data(cbpp, package = "lme4")
tmb <- glmmTMB(cbind(incidence, size - incidence) ~ period + (1 | herd), family = binomial, data = cbpp)
co <- summary(tmb)$coefficients$cond
write.csv(fmt(data.frame(term = rownames(co), estimate = co[, 1], se = co[, 2],
  loglik = as.numeric(logLik(tmb)))), file.path(out, "cbpp_glmmtmb.csv"), row.names = FALSE)
