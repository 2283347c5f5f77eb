# libtorch from the pip torch wheel, found without repeating its quirks. Used by the project's
# CMakeLists.txt and, installed beside it, by amanetConfig.cmake (so `find_package(amanet)` in an
# outside project needs no extra flags).
#
# What the pip wheel's CUDA build needs, and what is done here when you have not set it yourself:
#   * the Torch package: CMAKE_PREFIX_PATH gets `torch.utils.cmake_prefix_path` (from the build's
#     default, else from the Python interpreter Python3_EXECUTABLE / the first python3 found);
#   * the CUDA toolkit: CUDAToolkit_ROOT / CUDA_TOOLKIT_ROOT_DIR = /usr/local/cuda if present;
#   * nvrtc: CUDA_nvrtc_LIBRARY = <site-packages>/nvidia/cu*/lib/libnvrtc.so.* (the toolkit under
#     /usr/local/cuda may not ship it, the wheel's nvidia packages do);
#   * TORCH_CUDA_ARCH_LIST (environment): an explicit list, so Torch's config does not probe for
#     GPUs (none on build machines);
#   * C++20 (libtorch 2.14's headers need it) and, for CUDA sources, nvcc's -std=c++20 that
#     CMake < 3.26 does not know how to spell (Torch sets CMAKE_CUDA_STANDARD to the C++ one).
#
# Inputs (optional, set before calling): AMANET_DEFAULT_TORCH_PREFIX, AMANET_DEFAULT_NVRTC,
# AMANET_DEFAULT_CUDA_ROOT, AMANET_DEFAULT_CUDA_ARCH_LIST (the installed config sets them to what
# amanet was built with).

macro(amanet_torch_hints)
  # -- where the Torch package is
  if(NOT Torch_DIR AND NOT DEFINED ENV{Torch_DIR})
    set(_amanet_torch_prefix "")
    if(AMANET_DEFAULT_TORCH_PREFIX AND EXISTS "${AMANET_DEFAULT_TORCH_PREFIX}")
      set(_amanet_torch_prefix "${AMANET_DEFAULT_TORCH_PREFIX}")
    else()
      if(NOT Python3_EXECUTABLE)
        find_package(Python3 QUIET COMPONENTS Interpreter)
      endif()
      if(Python3_EXECUTABLE)
        execute_process(COMMAND "${Python3_EXECUTABLE}" -c "import torch;print(torch.utils.cmake_prefix_path)"
                        OUTPUT_VARIABLE _amanet_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      endif()
    endif()
    if(_amanet_torch_prefix)
      # Appended: a libtorch you put on CMAKE_PREFIX_PATH yourself comes first.
      list(APPEND CMAKE_PREFIX_PATH "${_amanet_torch_prefix}")
    endif()
  endif()

  # -- CUDA toolkit root (FindCUDA / FindCUDAToolkit, used by Torch's config for a CUDA build)
  if(NOT CUDAToolkit_ROOT AND NOT DEFINED ENV{CUDAToolkit_ROOT} AND NOT DEFINED ENV{CUDA_HOME})
    if(AMANET_DEFAULT_CUDA_ROOT AND EXISTS "${AMANET_DEFAULT_CUDA_ROOT}")
      set(CUDAToolkit_ROOT "${AMANET_DEFAULT_CUDA_ROOT}")
    elseif(EXISTS /usr/local/cuda)
      set(CUDAToolkit_ROOT /usr/local/cuda)
    endif()
    if(CUDAToolkit_ROOT AND NOT CUDA_TOOLKIT_ROOT_DIR)
      set(CUDA_TOOLKIT_ROOT_DIR "${CUDAToolkit_ROOT}")
    endif()
  endif()

  # -- nvrtc from the pip nvidia packages
  if(NOT CUDA_nvrtc_LIBRARY)
    if(AMANET_DEFAULT_NVRTC AND EXISTS "${AMANET_DEFAULT_NVRTC}")
      set(CUDA_nvrtc_LIBRARY "${AMANET_DEFAULT_NVRTC}" CACHE FILEPATH "nvrtc (pip nvidia package)")
    else()
      if(NOT Python3_EXECUTABLE)
        find_package(Python3 QUIET COMPONENTS Interpreter)
      endif()
      if(Python3_EXECUTABLE)
        execute_process(COMMAND "${Python3_EXECUTABLE}" -c
          "import glob,os,sysconfig;p=sysconfig.get_paths()['purelib'];c=sorted(glob.glob(os.path.join(p,'nvidia','cu*','lib','libnvrtc.so*')));print(c[0] if c else '')"
          OUTPUT_VARIABLE _amanet_nvrtc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
        if(_amanet_nvrtc)
          set(CUDA_nvrtc_LIBRARY "${_amanet_nvrtc}" CACHE FILEPATH "nvrtc (pip nvidia package)")
        endif()
      endif()
    endif()
  endif()

  # -- no GPU probing
  if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
    if(AMANET_DEFAULT_CUDA_ARCH_LIST)
      set(ENV{TORCH_CUDA_ARCH_LIST} "${AMANET_DEFAULT_CUDA_ARCH_LIST}")
    else()
      set(ENV{TORCH_CUDA_ARCH_LIST} "7.5;8.0;8.6;8.9;9.0")
    endif()
  endif()
endmacro()

# After find_package(Torch): let CUDA targets compile with CMAKE_CUDA_STANDARD 20 on CMake < 3.26,
# which has no nvcc flag for that dialect (configure error "CUDA20 ... not known").
macro(amanet_cuda_dialect_fix)
  if(CMAKE_CUDA_COMPILER_ID STREQUAL "NVIDIA" AND NOT DEFINED CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
endmacro()
