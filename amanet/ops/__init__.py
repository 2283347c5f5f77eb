"""Python face of the csrc ops: reference implementations and the switch to the fused ones."""

from .aggregation import adaptive_aggregation, adaptive_aggregation_reference  # noqa: F401
