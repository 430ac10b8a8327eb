# Reference numbers for studykit's cumulative link mixed models (ordinal::clmm).
# Run from this directory:  Rscript make_references.R
suppressPackageStartupMessages({
  library(ordinal)
  library(jsonlite)
  library(emmeans)
})

# ---- data 1: ordinal's wine data (Randall 1989): rating 1-5, 9 judges x 8 samples
data(wine, package = "ordinal")
write.csv(wine[, c("rating", "temp", "contact", "bottle", "judge")], "wine.csv", row.names = FALSE)

# ---- data 2: SIMULATED Karolinska Sleepiness Scale (1-9) in a two-period crossover
#      (ketamine vs placebo), 3 days per period, participant random intercept, logistic latent
set.seed(20261204)
n <- 48
ids <- sprintf("P%02d", 1:n)
seq_ab <- rep(c("KP", "PK"), each = n / 2)
rows <- list()
for (i in seq_len(n)) {
  b <- rnorm(1, 0, 1.2)
  for (period in 1:2) {
    trt <- if ((seq_ab[i] == "KP") == (period == 1)) "ketamine" else "placebo"
    for (day in 1:3) {
      eta <- b - 0.8 * (trt == "ketamine") + 0.3 * (day - 1) +
        0.5 * (trt == "ketamine") * (day == 3) + 0.2 * (period == 2)
      latent <- eta + rlogis(1)
      kss <- findInterval(latent, c(-4, -3, -2, -1, 0, 1, 2.2, 3.5)) + 1
      rows[[length(rows) + 1]] <- data.frame(participant_id = ids[i], period = period,
                                             treatment = trt, day = paste0("day", day),
                                             kss = kss)
    }
  }
}
kss <- do.call(rbind, rows)
# a few missing ratings, as in a real diary
kss$kss[c(7, 50, 131)] <- NA
write.csv(kss, "kss_sim.csv", row.names = FALSE)
kss$kss_f <- factor(kss$kss, levels = sort(unique(na.omit(kss$kss))), ordered = TRUE)
kss$treatment <- factor(kss$treatment, levels = c("placebo", "ketamine"))

# tight convergence (ordinal's defaults stop at max|gradient| ~ 1e-3): nlminb rel.tol 1e-12 and
# the inner (conditional mode) Newton to gradTol 1e-6 (smaller values stall the inner steps)
tight <- clmm.control(gradTol = 1e-6, rel.tol = 1e-12, eval.max = 1e4, iter.max = 1e4)

fits <- list(
  wine_logit_laplace = list(
    formula = "rating ~ temp + contact + (1 | judge)", data = "wine.csv", link = "logit", nagq = 1,
    specs = "temp * contact", main = "temp",
    fit = clmm(rating ~ temp + contact + (1 | judge), data = wine, link = "logit", control = tight)),
  wine_probit_laplace = list(
    formula = "rating ~ temp + contact + (1 | judge)", data = "wine.csv", link = "probit", nagq = 1,
    specs = "temp * contact", main = "contact",
    fit = clmm(rating ~ temp + contact + (1 | judge), data = wine, link = "probit", control = tight)),
  wine_logit_agq10 = list(
    formula = "rating ~ temp * contact + (1 | judge)", data = "wine.csv", link = "logit", nagq = 10,
    specs = "temp * contact", main = "temp",
    fit = clmm(rating ~ temp * contact + (1 | judge), data = wine, link = "logit", nAGQ = 10, control = tight)),
  kss_logit_laplace = list(
    formula = "kss ~ treatment * day + period + (1 | participant_id)", data = "kss_sim.csv",
    link = "logit", nagq = 1, specs = "treatment * day", main = "treatment",
    fit = clmm(kss_f ~ treatment * day + period + (1 | participant_id), data = kss,
               control = tight)),
  kss_probit_agq7 = list(
    formula = "kss ~ treatment * day + period + (1 | participant_id)", data = "kss_sim.csv",
    link = "probit", nagq = 7, specs = "treatment * day", main = "day",
    fit = clmm(kss_f ~ treatment * day + period + (1 | participant_id), data = kss,
               link = "probit", nAGQ = 7, control = tight))
)

for (name in names(fits)) {
  f <- fits[[name]]
  m <- f$fit
  s <- summary(m)
  cf <- as.data.frame(coef(s))
  cf$term <- rownames(cf)
  out <- list(
    formula = f$formula, data = f$data, link = f$link, nagq = f$nagq,
    logLik = as.numeric(logLik(m)), df_logLik = attr(logLik(m), "df"),
    AIC = AIC(m), BIC = BIC(m), nobs = nobs(m),
    ngroups = setNames(list(nrow(ranef(m)[[1]])), names(ranef(m))),
    sd_group = unname(m$ST[[1]][1, 1]),
    coef = cf,
    vcov = unname(vcov(m)), vcov_names = rownames(vcov(m)),
    ranef = unname(ranef(m)[[1]][, 1]), ranef_levels = rownames(ranef(m)[[1]]),
    max_grad = max(abs(m$gradient)),
    thresholds = names(m$alpha),
    # emmeans' default mode for ordinal models: "latent" (x'beta - mean(thresholds))
    emmeans_cells = as.data.frame(emmeans(m, as.formula(paste("~", f$specs)))),
    emmeans_main = as.data.frame(emmeans(m, as.formula(paste("~", f$main))))
  )
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"),
             paste0(name, ".json"))
  cat("\n====", name, "\n")
  print(s)
}
sink("sessionInfo.txt"); print(sessionInfo()); sink()
