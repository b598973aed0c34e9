// The one XLA FFI binding helper of the kernels here: a handler's binding (Ctx / Arg / Ret / Attr, in
// order) is read off its C++ signature, so a kernel names only its attributes, in signature order:
//
//   ffi::Error RmsNorm(ffi::AnyBuffer x, ffi::AnyBuffer weight, float eps, ffi::Result<ffi::AnyBuffer> y);
//   TRELLIS_FFI_HANDLER(TrellisRmsNorm, RmsNorm, "eps");
//
// Parameters map as XLA's own binding does: ffi::ThreadPool is the context, buffers (ffi::AnyBuffer,
// ffi::Buffer<...>) are operands, ffi::Result<...> are results, and anything else is an attribute. A name
// list that does not match the attribute count fails to compile.
#pragma once

#include <type_traits>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace trellis {
namespace ffi_binding {

namespace ffi = xla::ffi;

template <typename T>
constexpr bool kIsContext = std::is_same_v<T, ffi::ThreadPool>;
template <typename T>
constexpr bool kIsOperand = !std::is_void_v<typename ffi::ArgBinding<T>::Arg>;
template <typename T>
constexpr bool kIsResult = !std::is_void_v<typename ffi::RetBinding<T>::Ret>;
template <typename T>
constexpr bool kIsAttribute = !kIsContext<T> && !kIsOperand<T> && !kIsResult<T>;

// Binds the parameters one at a time. A Binding can be neither copied nor moved out of a function, only
// chained as a temporary, so the chain ends inside (`To(impl)`) and what comes back is the handler.
template <typename... Params>
struct Signature;

template <>
struct Signature<> {
  template <typename Binding, typename Fn>
  static auto bind(Binding&& binding, Fn impl, const char* const*) {
    return binding.To(impl);
  }
};

template <typename Param, typename... Rest>
struct Signature<Param, Rest...> {
  template <typename Binding, typename Fn>
  static auto bind(Binding&& binding, Fn impl, const char* const* names) {
    using Next = Signature<Rest...>;
    if constexpr (kIsContext<Param>)
      return Next::bind(std::move(binding).template Ctx<Param>(), impl, names);
    else if constexpr (kIsOperand<Param>)
      return Next::bind(std::move(binding).template Arg<typename ffi::ArgBinding<Param>::Arg>(), impl, names);
    else if constexpr (kIsResult<Param>)
      return Next::bind(std::move(binding).template Ret<typename ffi::RetBinding<Param>::Ret>(), impl, names);
    else
      return Next::bind(std::move(binding).template Attr<Param>(*names), impl, names + 1);
  }
};

}  // namespace ffi_binding

// The FFI handler of `impl`, whose attributes are called `names` (in signature order).
template <typename... Params, typename... Names>
auto ffi_handler(xla::ffi::Error (*impl)(Params...), Names... names) {
  static_assert(sizeof...(Names) == (0 + ... + ffi_binding::kIsAttribute<Params>),
                "name every attribute of the handler, in signature order");
  const char* const list[] = {names..., nullptr};
  return ffi_binding::Signature<Params...>::bind(xla::ffi::Ffi::Bind(), impl, list);
}

}  // namespace trellis

// Defines the extern "C" FFI handler `symbol` (what Python registers) for the function `impl`, as
// XLA_FFI_DEFINE_HANDLER_SYMBOL does with a binding written out.
#define TRELLIS_FFI_HANDLER(symbol, impl, ...)                                           \
  extern "C" XLA_FFI_Error* symbol(XLA_FFI_CallFrame* call_frame) {                      \
    static auto* handler = ::trellis::ffi_handler(impl, ##__VA_ARGS__).release();        \
    return handler->Call(call_frame);                                                    \
  }                                                                                      \
  static_assert(true, "a semicolon after the macro")
