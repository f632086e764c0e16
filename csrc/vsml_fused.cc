// vsml_es._fused: the fused VSML layer kernel (vsml_fused_kernel.h) as an XLA FFI handler, and
// a minimal Python module that hands the handler to JAX (jax.ffi.register_ffi_target) as a
// capsule. Plain CPython API, no binding library, so the build needs only a C++17 compiler,
// Python's headers and jaxlib's FFI headers.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdint>
#include <string>

#include "vsml_fused_dispatch.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

namespace {

// Shapes, all with the same leading (member) dimensions, which the kernel flattens:
//   w [..., 4S, S], fwd [..., 4S, n_in], bwd [..., 4S, n_out], mask [..., n_out],
//   h, c [..., S, n_out, n_in]  ->  h, c (aliased to the inputs by the caller),
//   sum_a [..., S, n_out], sum_b [..., S, n_in].
ffi::Error LayerTicks(F32 w, F32 fwd, F32 bwd, F32 mask, F32 h, F32 c, int64_t ticks,
                      F32Out h_out, F32Out c_out, F32Out sum_a, F32Out sum_b) {
  const auto dims = h.dimensions();
  if (dims.size() < 3) return ffi::Error::InvalidArgument("h must be [..., S, n_out, n_in]");
  const int64_t rank = static_cast<int64_t>(dims.size());
  const int64_t s = dims[rank - 3], n_out = dims[rank - 2], n_in = dims[rank - 1];
  const int64_t batch = static_cast<int64_t>(h.element_count()) / (s * n_out * n_in);
  auto expect = [&](size_t got, int64_t per_member, const char* name) -> std::string {
    if (static_cast<int64_t>(got) == batch * per_member) return "";
    return std::string(name) + " has " + std::to_string(got) + " elements, expected " +
           std::to_string(batch * per_member);
  };
  for (const std::string& err :
       {expect(w.element_count(), 4 * s * s, "w"), expect(fwd.element_count(), 4 * s * n_in, "fwd"),
        expect(bwd.element_count(), 4 * s * n_out, "bwd"),
        expect(mask.element_count(), n_out, "mask"),
        expect(c.element_count(), s * n_out * n_in, "c"),
        expect(sum_a->element_count(), s * n_out, "sum_a"),
        expect(sum_b->element_count(), s * n_in, "sum_b")}) {
    if (!err.empty()) return ffi::Error::InvalidArgument(err);
  }
  const vsml_fused::LayerFn fn = vsml_fused::select(s, vsml_fused::isa());
  if (fn == nullptr)
    return ffi::Error::InvalidArgument("the fused kernel supports state size 16, not " +
                                       std::to_string(s));
  if (ticks < 0) return ffi::Error::InvalidArgument("ticks must be >= 0");
  const vsml_fused::LayerArgs args{batch, n_out, n_in, ticks,
                                   w.typed_data(), fwd.typed_data(), bwd.typed_data(),
                                   mask.typed_data(), h.typed_data(), c.typed_data(),
                                   h_out->typed_data(), c_out->typed_data(),
                                   sum_a->typed_data(), sum_b->typed_data()};
  fn(args);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(VsmlLayerTicks, LayerTicks,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // w
                                  .Arg<F32>()  // fwd
                                  .Arg<F32>()  // bwd
                                  .Arg<F32>()  // mask
                                  .Arg<F32>()  // h
                                  .Arg<F32>()  // c
                                  .Attr<int64_t>("ticks")
                                  .Ret<F32>()  // h
                                  .Ret<F32>()  // c
                                  .Ret<F32>()  // sum_a
                                  .Ret<F32>());  // sum_b

static PyObject* layer_ticks_handler(PyObject*, PyObject*) {
  return PyCapsule_New(reinterpret_cast<void*>(&VsmlLayerTicks), nullptr, nullptr);
}

static PyObject* isa_name(PyObject*, PyObject*) { return PyUnicode_FromString(vsml_fused::isa()); }

static PyObject* cpu_isa_name(PyObject*, PyObject*) {
  return PyUnicode_FromString(vsml_fused::cpu_isa());
}

static PyMethodDef kMethods[] = {
    {"layer_ticks_handler", layer_ticks_handler, METH_NOARGS,
     "The XLA FFI handler of the fused layer ticks, as a capsule for jax.ffi."},
    {"isa", isa_name, METH_NOARGS,
     "The instruction set the kernel uses now: avx512, avx2 or generic."},
    {"cpu_isa", cpu_isa_name, METH_NOARGS,
     "The best instruction set of this CPU, whatever VSML_ES_FUSED_ISA says."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_fused",
                              "The fused VSML layer kernel (XLA FFI).", -1, kMethods};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&kModule); }
