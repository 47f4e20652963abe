// The child-process wire as the parent reads it: frames from bytes, and the
// readers of a frame's parts, on input a broken or hostile child could send.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "isolation/wire.hpp"

using bulwark::detail::wire::FrameReader;
using nlohmann::json;
namespace wire = bulwark::detail::wire;

namespace {

std::string frame(const std::string& text) {
  std::string out(4, '\0');
  const auto n = static_cast<std::uint32_t>(text.size());
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + text;
}

}  // namespace

TEST_SUITE("wire") {
  TEST_CASE("numbers that are not unsigned integers are a malformed frame, not undefined behaviour") {
    // Found by fuzz_wire: 4e91 as a module address reached get<uintptr_t>(),
    // a float-to-integer conversion out of range.
    std::ifstream in(BULWARK_SOURCE_DIR "/tests/fuzz/regressions/wire/float-address", std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    REQUIRE(!bytes.str().empty());
    FrameReader reader;
    reader.feed(bytes.str());
    const auto ready = reader.next();
    REQUIRE(ready.has_value());
    CHECK_THROWS_AS(wire::modules_from_json(ready->at("modules")), std::runtime_error);
    CHECK_FALSE(reader.next().has_value());  // the second frame is torn: it waits for more

    CHECK_THROWS_AS(wire::unsigned_value(json(4e91)), std::runtime_error);
    CHECK_THROWS_AS(wire::unsigned_value(json(-1)), std::runtime_error);
    CHECK_THROWS_AS(wire::unsigned_value(json("12")), std::runtime_error);
    CHECK(wire::unsigned_value(json(18446744073709551615ull)) == 18446744073709551615ull);
    CHECK(wire::unsigned_or(json{{"addr", 1.5}}, "addr", 7) == 7);
    CHECK(wire::unsigned_or(json{{"addr", 4096}}, "addr", 7) == 4096);
    CHECK(wire::unsigned_or(json::array(), "addr", 7) == 7);
  }

  TEST_CASE("a failure with a float or out-of-range kind is refused or mapped, never cast blindly") {
    const json f = {{"kind", 1e300}, {"type", "t"}, {"message", "m"}, {"nested", json::array()},
                    {"trace", {{"frames", json::array()}}}};
    CHECK_THROWS_AS(wire::failure_from_json(f, {}), std::runtime_error);
    json g = f;
    g["kind"] = 99;
    CHECK(wire::failure_from_json(g, {}).kind == bulwark::FailureKind::exception);
    g["kind"] = 1;
    CHECK(wire::failure_from_json(g, {}).kind == bulwark::FailureKind::timeout);
  }

  TEST_CASE("a progress frame: its fraction clamped to 0..1 and its note; anything else is ignored") {
    auto p = wire::progress_from_json(json::parse(R"({"op": "progress", "fraction": 7, "note": "n"})"));
    REQUIRE(p);
    CHECK(p->first == 1.0);
    CHECK(p->second == "n");
    CHECK(wire::progress_from_json(json::parse(R"({"op": "progress", "fraction": -1e300, "note": ""})"))->first == 0.0);
    CHECK_FALSE(wire::progress_from_json(json::parse(R"({"op": "progress", "fraction": "half", "note": ""})")));
    CHECK_FALSE(wire::progress_from_json(json::parse(R"({"op": "progress", "fraction": 0.5})")));
    CHECK_FALSE(wire::progress_from_json(json::parse(R"({"op": "progress", "fraction": 0.5, "note": 3})")));
  }

  TEST_CASE("frames: complete ones parse, a torn one waits, oversized and deep ones are refused") {
    FrameReader reader;
    reader.feed(frame(R"({"op":"result","ok":true,"result":1})") + frame(R"({"op":)").substr(0, 6));
    auto first = reader.next();
    REQUIRE(first.has_value());
    CHECK(first->at("result") == 1);
    CHECK_FALSE(reader.next().has_value());  // the rest has not arrived

    FrameReader deep;
    deep.feed(frame(std::string(5000, '[') + std::string(5000, ']')));
    CHECK_THROWS_AS(deep.next(), std::runtime_error);

    FrameReader huge;
    huge.feed(std::string("\xff\xff\xff\xff", 4));
    CHECK_THROWS_AS(huge.next(), std::runtime_error);
  }
}
