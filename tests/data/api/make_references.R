# Reference numbers for studykit's formula front doors (lmer / glmer) and summaries.
# Run from this directory:  Rscript make_references.R
# Writes the data sets it uses (CSV) and one JSON file per model (summary numbers).
suppressPackageStartupMessages({
  library(lmerTest)
  library(emmeans)
  library(jsonlite)
  library(glmmTMB)
})

# glmmTMB's fit of the same GLMM (maximum likelihood by TMB's Laplace, tight optimum; for
# glmer fits that lme4 flags as not converged)
tmb <- function(formula, data, family) {
  m <- glmmTMB(formula, data = data, family = family)
  cf <- as.data.frame(summary(m)$coefficients$cond)
  cf$term <- rownames(cf)
  vc <- VarCorr(m)$cond
  list(coef = cf, logLik = as.numeric(logLik(m)),
       sd = sapply(vc, function(v) attr(v, "stddev")[[1]]))
}

write_data <- function(df, name) write.csv(df, paste0(name, ".csv"), row.names = FALSE)

summ <- function(m, name, formula, data_file, extra = list()) {
  s <- summary(m)
  vc <- as.data.frame(VarCorr(m))
  cf <- as.data.frame(coef(s))
  cf$term <- rownames(cf)
  res <- residuals(m, type = "pearson", scaled = TRUE)
  out <- list(
    formula = formula,
    data = data_file,
    class = class(m)[1],
    reml = isREML(m),
    REML_criterion = if (isREML(m)) unname(s$AICtab[1]) else NA,
    logLik = as.numeric(logLik(m)),
    df_logLik = attr(logLik(m), "df"),
    AIC = AIC(m),
    BIC = BIC(m),
    deviance = if (isREML(m)) NA else deviance(m),
    df_resid = df.residual(m),
    nobs = nobs(m),
    ngrps = as.list(ngrps(m)),
    sigma = sigma(m),
    residual_quantiles = unname(quantile(res)),
    varcorr = vc,
    coef = cf,
    corr_fixef = unname(as.matrix(cov2cor(as.matrix(vcov(m))))),
    singular = isSingular(m)
  )
  out <- c(out, extra)
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
             paste0(name, ".json"))
  cat("\n====", name, "\n")
  print(s)
}

# 1-2: sleepstudy (lme4), correlated and uncorrelated random slopes
data(sleepstudy, package = "lme4")
write_data(sleepstudy, "sleepstudy")
m <- lmer(Reaction ~ Days + (Days | Subject), sleepstudy)
summ(m, "sleepstudy_slope", "Reaction ~ Days + (Days | Subject)", "sleepstudy.csv")
m <- lmer(Reaction ~ Days + (Days || Subject), sleepstudy, REML = FALSE)
summ(m, "sleepstudy_uncorrelated_ml", "Reaction ~ Days + (Days || Subject)", "sleepstudy.csv")

# 3: Pastes (lme4), nested: (1 | batch/cask)
data(Pastes, package = "lme4")
write_data(Pastes[, c("strength", "batch", "cask")], "pastes")
m <- lmer(strength ~ 1 + (1 | batch/cask), Pastes)
summ(m, "pastes_nested", "strength ~ 1 + (1 | batch/cask)", "pastes.csv")

# 4: Penicillin (lme4), crossed: (1 | plate) + (1 | sample)
data(Penicillin, package = "lme4")
write_data(Penicillin, "penicillin")
m <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), Penicillin)
summ(m, "penicillin_crossed", "diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin.csv")

# 5: the simulated trial of tests/data/lme4 (SIMULATED data) with R's default factor levels
#    (sorted: arm reference "ketamine", night reference "baseline"), anova and emmeans
trial <- read.csv("../lme4/trial_sim.csv", stringsAsFactors = TRUE)
m <- lmer(sws_min ~ arm * night + (1 | id), trial)
a3 <- as.data.frame(anova(m, type = 3))
a3$term <- rownames(a3)
a3kr <- as.data.frame(anova(m, type = 3, ddf = "Kenward-Roger"))
a3kr$term <- rownames(a3kr)
em <- as.data.frame(emmeans(m, ~ night, lmer.df = "satterthwaite"))
summ(m, "trial_default_levels", "sws_min ~ arm * night + (1 | id)", "../lme4/trial_sim.csv",
     list(anova_satterthwaite = a3, anova_kenward_roger = a3kr, emmeans_night = em))

# 6: the same trial, counts with an offset (Poisson GLMM, one random intercept)
trial$hours <- 6 + (as.integer(trial$id) %% 5) / 2 + trial$night_index / 4
write_data(trial, "trial_offset")
m <- glmer(awakenings ~ arm * night + offset(log(hours)) + (1 | id), family = poisson,
           data = trial, control = glmerControl(optimizer = "bobyqa",
                                                optCtrl = list(maxfun = 1e5)))
summ(m, "trial_poisson_offset", "awakenings ~ arm * night + offset(log(hours)) + (1 | id)",
     "trial_offset.csv")

# 7: grouseticks (lme4), crossed Poisson GLMM (YEAR is a factor in R)
data(grouseticks, package = "lme4")
write_data(grouseticks[, c("INDEX", "TICKS", "BROOD", "HEIGHT", "YEAR", "LOCATION")], "grouseticks")
m <- glmer(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION), family = poisson,
           data = grouseticks, control = glmerControl(optimizer = "bobyqa"))
summ(m, "grouseticks_crossed", "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)",
     "grouseticks.csv",
     list(glmmTMB = tmb(TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION), grouseticks,
                        poisson)))

# 8: cbpp (lme4), binomial with cbind(successes, trials - successes)
data(cbpp, package = "lme4")
write_data(cbpp, "cbpp")
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), family = binomial,
           data = cbpp)
summ(m, "cbpp_binomial", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "cbpp.csv",
     list(glmmTMB = tmb(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp,
                        binomial)))

sink("sessionInfo.txt"); print(sessionInfo()); sink()
