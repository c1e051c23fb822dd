// The extension is loaded for its TORCH_LIBRARY_IMPL registrations; Python only
// needs a module object to import.
#include <Python.h>

static struct PyModuleDef padkern_cpu_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&padkern_cpu_module); }
