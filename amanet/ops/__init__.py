"""Python face of the csrc ops: reference implementations and the switch to the fused ones."""

from .aggregation import adaptive_aggregation, adaptive_aggregation_reference  # noqa: F401
from .nms import batched_nms, batched_nms_fused, batched_nms_reference, nms, nms_fused, nms_reference  # noqa: F401
from .roi_align import roi_align, roi_align_fused, roi_align_reference  # noqa: F401
from .iuv_paste import MODE_AMANET, MODE_S1X, iuv_paste, iuv_paste_fused, iuv_paste_reference  # noqa: F401
from .uv_loss import uv_interp_loss, uv_interp_loss_reference  # noqa: F401  (MODE_* stay in uv_loss)
