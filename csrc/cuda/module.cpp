// The extension is loaded for its TORCH_LIBRARY_IMPL registrations; Python only
// needs a module object to import.
#include <Python.h>

static struct PyModuleDef padkern_cuda_module = {PyModuleDef_HEAD_INIT, "_cuda", nullptr, -1, nullptr};

PyMODINIT_FUNC PyInit__cuda(void) { return PyModule_Create(&padkern_cuda_module); }
