// The amanet op library: every schema is defined here once, in the `amanet` namespace.
// Device kernels register with TORCH_LIBRARY_IMPL in cpu/*.cpp and cuda/*.cu; autograd
// wrappers register for the Autograd key. The library is loaded from Python as `amanet._C`
// and linked into C++ apps as `amanet_ops`.
#include <torch/library.h>

#include "build_info.h"

TORCH_LIBRARY(amanet, m) {
  // Which kernels this build contains: "cpu" or "cpu+cuda(<archs>)".
  m.def("build_info() -> str", &amanet::build_info);
}
