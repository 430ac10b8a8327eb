"""Mixed-effects models: design matrices, linear and count mixed models, inference."""
