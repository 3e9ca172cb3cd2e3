#include "safety/normalize.h"

#include <utf8proc.h>

namespace sb::safety {
namespace {

constexpr utf8proc_option_t kOptions =
    static_cast<utf8proc_option_t>(UTF8PROC_COMPAT | UTF8PROC_DECOMPOSE | UTF8PROC_CASEFOLD |
                                   UTF8PROC_IGNORE | UTF8PROC_STRIPMARK | UTF8PROC_LUMP);

// Bytes a UTF-8 sequence starting with `lead` has, 0 when `lead` cannot
// start one.
size_t SequenceLength(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

}  // namespace

Normalized Normalize(std::string_view original) {
  Normalized n;
  n.text.reserve(original.size());
  n.from.reserve(original.size());
  n.to.reserve(original.size());
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(original.data());
  const auto size = static_cast<utf8proc_ssize_t>(original.size());
  auto emit = [&](std::string_view out, size_t from, size_t to) {
    n.text.append(out);
    n.from.insert(n.from.end(), out.size(), static_cast<uint32_t>(from));
    n.to.insert(n.to.end(), out.size(), static_cast<uint32_t>(to));
  };
  utf8proc_ssize_t at = 0;
  while (at < size) {
    const unsigned char lead = bytes[at];
    if (lead < 0x80) {  // ASCII: only letters change (case)
      const char c = static_cast<char>(lead >= 'A' && lead <= 'Z' ? lead - 'A' + 'a' : lead);
      emit(std::string_view(&c, 1), at, at + 1);
      ++at;
      continue;
    }
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t len = utf8proc_iterate(bytes + at, size - at, &cp);
    if (len < 0) {
      const size_t want = SequenceLength(lead);
      if (want > 0 && static_cast<utf8proc_ssize_t>(want) > size - at) {
        // Possibly the start of a code point the next piece completes.
        bool prefix = true;
        for (utf8proc_ssize_t k = at + 1; k < size; ++k) prefix &= (bytes[k] & 0xC0) == 0x80;
        if (prefix) break;
      }
      emit(std::string_view(original.data() + at, 1), at, at + 1);
      ++at;
      continue;
    }
    utf8proc_int32_t decomposed[32];
    int boundclass = 0;
    const utf8proc_ssize_t count =
        utf8proc_decompose_char(cp, decomposed, 32, kOptions, &boundclass);
    if (count < 0 || count > 32) {
      emit(std::string_view(original.data() + at, static_cast<size_t>(len)), at, at + len);
    } else {
      char out[4 * 32];
      size_t out_len = 0;
      for (utf8proc_ssize_t k = 0; k < count; ++k) {
        out_len += static_cast<size_t>(utf8proc_encode_char(
            decomposed[k], reinterpret_cast<utf8proc_uint8_t*>(out + out_len)));
      }
      emit(std::string_view(out, out_len), at, at + len);
    }
    at += len;
  }
  n.consumed = static_cast<size_t>(at);
  return n;
}

}  // namespace sb::safety
