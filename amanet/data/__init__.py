"""Data: image reading, transforms, DensePose-COCO datasets, synthetic data."""
