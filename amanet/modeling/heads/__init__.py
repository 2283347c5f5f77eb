"""DensePose RoI heads."""
