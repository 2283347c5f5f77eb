// Python module shell so that `import amanet._C` loads the op library (ops register
// themselves through TORCH_LIBRARY static initialisers; no Python bindings are needed).
#include <Python.h>

static struct PyModuleDef amanet_c_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&amanet_c_module); }
