"""DensePose predictors."""
