// UTF-8 for text that comes from outside the program: a task's command name or a cgroup's
// directory name is any bytes its owner chose, but protobuf string fields (proto3 refuses to
// parse anything else), JSON and terminals need valid UTF-8.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace mseg {

// The length of the UTF-8 character at text[at] and its code point in `code_point`; 0 when
// the bytes there are not valid UTF-8: a stray continuation byte, an overlong form, a
// surrogate, a code point past U+10FFFF, or a character cut short.
inline size_t decodeUtf8(std::string_view text, size_t at, char32_t& code_point) {
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[at + i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) {
    code_point = lead;
    return 1;
  }
  size_t length = 0;
  unsigned char low = 0x80;  // the range of the second byte, narrower after some lead bytes
  unsigned char high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    code_point = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    code_point = lead & 0x0f;
    low = lead == 0xe0 ? 0xa0 : 0x80;
    high = lead == 0xed ? 0x9f : 0xbf;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    code_point = lead & 0x07;
    low = lead == 0xf0 ? 0x90 : 0x80;
    high = lead == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (at + length > text.size() || byte(1) < low || byte(1) > high) {
    return 0;
  }
  for (size_t i = 1; i < length; i++) {
    if ((byte(i) & 0xc0) != 0x80) {
      return 0;
    }
    code_point = (code_point << 6) | (byte(i) & 0x3f);
  }
  return length;
}

// C1 controls (U+009B is CSI, like ESC [) and characters that print nothing but change what
// the text around them looks like: zero-width characters, bidirectional embeddings, overrides
// and isolates, the byte order mark, tag characters.
inline bool isInvisibleCharacter(char32_t c) {
  return (c >= 0x80 && c <= 0x9f) || c == 0x061c || c == 0x180e || (c >= 0x200b && c <= 0x200f) ||
         (c >= 0x2028 && c <= 0x202e) || (c >= 0x2060 && c <= 0x206f) || c == 0xfeff ||
         (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xe0000 && c <= 0xe007f);
}

// The first control character (C0, DEL) or invisible character of `text`, or 0 when it has
// none. Bytes that are not UTF-8 are skipped.
inline char32_t firstInvisibleCharacter(std::string_view text) {
  for (size_t at = 0; at < text.size();) {
    char32_t c = 0;
    const size_t length = decodeUtf8(text, at, c);
    if (length != 0 && (c < 0x20 || c == 0x7f || isInvisibleCharacter(c))) {
      return c;
    }
    at += length == 0 ? 1 : length;
  }
  return 0;
}

// Appends `\xHH` for every byte of `bytes`.
inline void appendHexEscaped(std::string& out, std::string_view bytes) {
  for (unsigned char c : bytes) {
    out += fmt::format("\\x{:02x}", c);
  }
}

// `text` with every byte that is not part of valid UTF-8 written as `\xHH`; valid text is
// returned unchanged. Control characters are valid UTF-8 and are kept: JSON and protobuf carry
// them, and what prints for people escapes them itself.
inline std::string validUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t at = 0; at < text.size();) {
    char32_t code_point = 0;
    const size_t length = decodeUtf8(text, at, code_point);
    if (length == 0) {
      appendHexEscaped(out, text.substr(at, 1));
      at += 1;
    } else {
      out += text.substr(at, length);
      at += length;
    }
  }
  return out;
}

}  // namespace mseg
