#include "build_info.h"

namespace amanet {
std::string build_info() {
#ifdef AMANET_WITH_CUDA
  return "cpu+" + cuda_build_info();
#else
  return "cpu";
#endif
}
}  // namespace amanet
