#include "support/signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace bulwark::detail {

int stack_dump_signal_number() noexcept { return SIGRTMIN + 3; }

AltStack::AltStack() : memory_(new char[kAltStackBytes]) {
  stack_t ss{};
  ss.ss_sp = memory_.get();
  ss.ss_size = kAltStackBytes;
  installed_ = sigaltstack(&ss, nullptr) == 0;
}

AltStack::~AltStack() {
  if (!installed_) return;
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
}

void SignalBuffer::add(const char* s) noexcept {
  while (*s != '\0' && size < sizeof data) data[size++] = *s++;
}

void SignalBuffer::add_hex(std::uintptr_t v) noexcept {
  char tmp[2 + 2 * sizeof v];
  int n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 0xF];
    v >>= 4;
  } while (v != 0);
  add("0x");
  while (n > 0 && size < sizeof data) data[size++] = tmp[--n];
}

void SignalBuffer::add_dec(long long v) noexcept {
  if (v < 0) add("-");
  add_unsigned(v < 0 ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v));
}

void SignalBuffer::add_unsigned(unsigned long long u) noexcept {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u != 0);
  while (n > 0 && size < sizeof data) data[size++] = tmp[--n];
}

bool write_all(int fd, const char* data, std::size_t size) noexcept {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace bulwark::detail
