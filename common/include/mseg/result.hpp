// Result<T>: the one error model of microseg.
//
// Shaped like C++23 std::expected (which Debian 12's compilers lack in C++20 mode): a function
// that can fail returns either a value or an Error. An Error carries the errno it came from (0
// when the cause is not a system call) and a context chain read outermost first, for example
// "load policy /etc/microseg/policy.yaml: open: No such file or directory".
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace mseg {

class Error {
public:
  Error(int code, std::string message) : code_(code), message_(std::move(message)) {}

  // An error from a failed system or libbpf call: errno (positive or negative) plus what we did.
  static Error fromErrno(int err, std::string_view what) {
    int code = err < 0 ? -err : err;
    return Error(code, std::string(what) + ": " + std::strerror(code));
  }

  static Error invalid(std::string message) { return Error(EINVAL, std::move(message)); }

  // Returns this error with `what` prepended to its context chain.
  Error wrap(std::string_view what) const& {
    return Error(code_, std::string(what) + ": " + message_);
  }

  int code() const { return code_; }
  const std::string& message() const { return message_; }

private:
  int code_;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
public:
  Result(T value) : state_(std::move(value)) {}
  Result(Error error) : state_(std::move(error)) {}

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<Error>(state_); }

private:
  std::variant<T, Error> state_;
};

template <>
class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }

private:
  Error error_{0, {}};
  bool failed_ = false;
};

using Status = Result<void>;

}  // namespace mseg
