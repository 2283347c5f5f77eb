"""Model parts: backbone, detector, poolers, DensePose heads and predictors."""
