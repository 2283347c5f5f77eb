#pragma once
#include <string>

namespace amanet {
// "cpu" for a CPU-only build, "cpu+cuda13.0(sm_75,...)" when the CUDA kernels were compiled.
std::string build_info();
#ifdef AMANET_WITH_CUDA
std::string cuda_build_info();  // defined in cuda/build_info.cu
#endif
}  // namespace amanet
