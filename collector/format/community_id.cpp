#include "mseg/format/community_id.hpp"

#include <netinet/in.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <memory>
#include <optional>

#include <fmt/format.h>

#include "flow_view.hpp"

namespace mseg::format {
namespace {

// ICMP messages that come in request/response pairs, each mapped to its counterpart. For them
// the counterpart type stands in as the destination port, so that a request and its response
// hash alike; every other message is one-way and keeps its code as the destination port.
struct IcmpPair {
  uint8_t type;
  uint8_t counterpart;
};

constexpr std::array<IcmpPair, 10> kIcmpPairs = {{
    {8, 0},    // echo request, echo reply
    {0, 8},    //
    {13, 14},  // timestamp, timestamp reply
    {14, 13},  //
    {15, 16},  // information request, information reply
    {16, 15},  //
    {10, 9},   // router solicitation, router advertisement
    {9, 10},   //
    {17, 18},  // address mask request, address mask reply
    {18, 17},  //
}};

constexpr std::array<IcmpPair, 12> kIcmpv6Pairs = {{
    {128, 129},  // echo request, echo reply
    {129, 128},  //
    {133, 134},  // router solicitation, router advertisement
    {134, 133},  //
    {135, 136},  // neighbor solicitation, neighbor advertisement
    {136, 135},  //
    {130, 131},  // multicast listener query, report
    {131, 130},  //
    {139, 140},  // node information query, reply (formerly who-are-you)
    {140, 139},  //
    {144, 145},  // home agent address discovery request, reply
    {145, 144},  //
}};

template <size_t N>
std::optional<uint8_t> findCounterpart(const std::array<IcmpPair, N>& pairs, uint16_t type) {
  for (const auto& pair : pairs) {
    if (pair.type == type) {
      return pair.counterpart;
    }
  }
  return std::nullopt;
}

bool hasPorts(uint8_t protocol) {
  return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP || protocol == IPPROTO_SCTP ||
         protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6;
}

// SHA-1 through a digest fetched once and a context each thread keeps. OpenSSL 3 looks the
// algorithm up in its provider store on every EVP_sha1() digest and on every SHA1() call (a
// wrapper of EVP_Q_digest), and EVP_Digest allocates a context each time: hashing a flow took
// about 500 ns either way, and 145 ns like this.
bool digestSha1(std::span<const uint8_t> input, unsigned char* digest, unsigned int* digest_size) {
  // Never freed: OpenSSL's own exit handler may run before a static destructor would.
  static EVP_MD* const sha1 = EVP_MD_fetch(nullptr, "SHA1", nullptr);
  struct ContextFree {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
  };
  thread_local std::unique_ptr<EVP_MD_CTX, ContextFree> context(EVP_MD_CTX_new());
  if (sha1 == nullptr || context == nullptr) {
    return false;
  }
  return EVP_DigestInit_ex2(context.get(), sha1, nullptr) == 1 &&
         EVP_DigestUpdate(context.get(), input.data(), input.size()) == 1 &&
         EVP_DigestFinal_ex(context.get(), digest, digest_size) == 1;
}

void appendHex(const unsigned char* bytes, size_t size, std::string& out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < size; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 0x0f];
  }
}

void appendBase64(const unsigned char* bytes, size_t size, std::string& out) {
  // EVP_EncodeBlock writes 4 characters per 3 bytes (rounded up) and a terminating NUL.
  size_t start = out.size();
  out.resize(start + 4 * ((size + 2) / 3) + 1);
  int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + start), bytes,
                                static_cast<int>(size));
  out.resize(start + static_cast<size_t>(written));
}

}  // namespace

Result<std::string> communityId(uint8_t protocol, std::span<const uint8_t> src_address,
                                std::span<const uint8_t> dst_address, uint16_t src_port,
                                uint16_t dst_port, uint16_t seed, bool base64) {
  if (src_address.size() != 4 && src_address.size() != 16) {
    return Error::invalid(fmt::format("source address has {} bytes", src_address.size()));
  }
  if (dst_address.size() != src_address.size()) {
    return Error::invalid(fmt::format("source address has {} bytes, destination {}",
                                      src_address.size(), dst_address.size()));
  }

  bool one_way = false;
  if (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6) {
    auto counterpart = protocol == IPPROTO_ICMP ? findCounterpart(kIcmpPairs, src_port)
                                                : findCounterpart(kIcmpv6Pairs, src_port);
    one_way = !counterpart.has_value();
    if (counterpart) {
      dst_port = *counterpart;
    }
  }

  // The smaller address (then port) goes first, so both directions hash alike; a one-way ICMP
  // message has no reverse direction to meet and keeps its order.
  auto cmp = std::lexicographical_compare_three_way(src_address.begin(), src_address.end(),
                                                    dst_address.begin(), dst_address.end());
  bool ordered = one_way || cmp < 0 || (cmp == 0 && src_port < dst_port);
  if (!ordered) {
    std::swap(src_address, dst_address);
    std::swap(src_port, dst_port);
  }

  // seed (2) . saddr . daddr . proto (1) . pad (1) [. sport (2) . dport (2)], all big-endian.
  std::array<uint8_t, 2 + 16 + 16 + 2 + 4> input;
  uint8_t* end = input.data();
  auto put16 = [&end](uint16_t value) {
    *end++ = static_cast<uint8_t>(value >> 8);
    *end++ = static_cast<uint8_t>(value & 0xff);
  };
  put16(seed);
  end = std::copy(src_address.begin(), src_address.end(), end);
  end = std::copy(dst_address.begin(), dst_address.end(), end);
  *end++ = protocol;
  *end++ = 0;
  if (hasPorts(protocol)) {
    put16(src_port);
    put16(dst_port);
  }

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  if (!digestSha1({input.data(), end}, digest, &digest_size)) {
    return Error(EIO, "community id: sha-1 digest failed");
  }

  std::string id = "1:";
  if (base64) {
    appendBase64(digest, digest_size, id);
  } else {
    appendHex(digest, digest_size, id);
  }
  return id;
}

Result<std::string> communityId(const microseg::telemetry::v1::FlowRecord& record, uint16_t seed,
                                bool base64) {
  auto fail = [&record](std::string_view what) {
    return Error::invalid(fmt::format("community id of record {}: {}", record.record_id(), what));
  };

  if (record.protocol() > UINT8_MAX) {
    return fail(fmt::format("protocol {} is not an IP protocol number", record.protocol()));
  }
  FlowView view = orientFlow(record);
  if (view.src_address.empty() || view.dst_address.empty()) {
    return fail(fmt::format("address of {} and {} bytes", record.local_address().size(),
                            record.peer_address().size()));
  }

  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  if (view.icmp) {
    if (!view.icmp_type || !view.icmp_code) {
      return fail(fmt::format("icmp type {} or code {} out of range", record.local_port(),
                              record.peer_port()));
    }
    src_port = *view.icmp_type;
    dst_port = *view.icmp_code;
  } else if (hasPorts(static_cast<uint8_t>(record.protocol()))) {
    if (!view.src_port || !view.dst_port) {
      return fail(
          fmt::format("port {} or {} out of range", record.local_port(), record.peer_port()));
    }
    src_port = *view.src_port;
    dst_port = *view.dst_port;
  }

  auto id = communityId(static_cast<uint8_t>(record.protocol()), view.src_address.bytes(),
                        view.dst_address.bytes(), src_port, dst_port, seed, base64);
  if (!id) {
    return fail(id.error().message());
  }
  return id;
}

}  // namespace mseg::format
