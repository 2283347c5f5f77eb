#include <cuda_runtime_api.h>

#include <string>

#include "../build_info.h"

namespace amanet {
std::string cuda_build_info() {
  return std::string("cuda") + std::to_string(CUDART_VERSION / 1000) + "." +
         std::to_string((CUDART_VERSION % 1000) / 10) + "(" AMANET_CUDA_ARCHS ")";
}
}  // namespace amanet
