// The YAML node tree: positions, scalar styles, duplicate keys and the typed reader.
#include "mseg/policy/yaml_tree.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace mseg::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

class YamlTreeTest : public ::testing::Test {
protected:
  std::vector<std::string> problems() const {
    std::vector<std::string> lines;
    for (const auto& diagnostic : out_.all()) {
      lines.push_back(diagnostic.toString());
    }
    return lines;
  }

  Diagnostics out_;
};

TEST_F(YamlTreeTest, GivesEveryNodeItsOneBasedLineAndColumn) {
  auto doc = parseYaml("a:\n  - x\n  - {b: 7}\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  const YamlNode& root = doc->root();
  ASSERT_TRUE(root.isMapping());
  const YamlNode* list = root.find("a");
  ASSERT_NE(list, nullptr);
  EXPECT_EQ(list->key, "a");
  EXPECT_EQ(list->key_position.line, 1u);
  EXPECT_EQ(list->key_position.column, 1u);
  ASSERT_EQ(list->children.size(), 2u);
  EXPECT_EQ(list->children[0].text, "x");
  EXPECT_EQ(list->children[0].position.line, 2u);
  EXPECT_EQ(list->children[0].position.column, 5u);
  const YamlNode* b = list->children[1].find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->position.line, 3u);
  EXPECT_EQ(b->position.column, 9u);
  EXPECT_EQ(b->kindName(), "a number");
  EXPECT_THAT(out_.all(), IsEmpty());
}

TEST_F(YamlTreeTest, KeepsQuotedScalarsApartFromPlainOnes) {
  auto doc =
      parseYaml("plain: 22\nquoted: \"22\"\nnothing: ~\nempty: ''\nflag: true\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  const YamlNode& root = doc->root();
  EXPECT_TRUE(root.find("plain")->plain);
  EXPECT_FALSE(root.find("quoted")->plain);
  EXPECT_EQ(root.find("quoted")->kindName(), "a string");
  EXPECT_TRUE(root.find("nothing")->isNull());
  EXPECT_TRUE(root.find("empty")->isScalar());
  EXPECT_EQ(root.find("empty")->text, "");
  EXPECT_EQ(root.find("flag")->kindName(), "a boolean");
}

TEST_F(YamlTreeTest, ReportsADuplicateKeyAndKeepsTheFirstValue) {
  auto doc = parseYaml("a: 1\nb: 2\na: 3\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_THAT(problems(),
              ElementsAre("t.yaml:3:1: error: duplicate key `a`; it is first defined at "
                          "1:1"));
  EXPECT_EQ(doc->root().children.size(), 2u);
  EXPECT_EQ(doc->root().find("a")->text, "1");
}

TEST_F(YamlTreeTest, FindsDuplicateKeysInLongMappings) {
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "k" + std::to_string(i) + ": " + std::to_string(i) + "\n";
  }
  text += "k7: again\n";

  auto doc = parseYaml(text, "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_THAT(problems(), ElementsAre("t.yaml:41:1: error: duplicate key `k7`; it is first "
                                      "defined at 8:1"));
  EXPECT_EQ(doc->root().children.size(), 40u);
}

TEST_F(YamlTreeTest, FailsOnASyntaxErrorWithThePlace) {
  auto doc = parseYaml("a: [1, 2\nb: 3\n", "t.yaml", out_);

  ASSERT_FALSE(doc.ok());
  ASSERT_EQ(out_.all().size(), 1u);
  EXPECT_EQ(out_.all()[0].position.line, 2u);
  EXPECT_THAT(out_.all()[0].message, ::testing::HasSubstr("while parsing a flow sequence at 1:4"));
}

TEST_F(YamlTreeTest, ReportsInvalidUtf8AtItsLine) {
  auto doc = parseYaml("a: 1\nb: \xff\xfe\n", "t.yaml", out_);

  ASSERT_FALSE(doc.ok());
  ASSERT_EQ(out_.all().size(), 1u);
  EXPECT_EQ(out_.all()[0].position.line, 2u);
  EXPECT_THAT(out_.all()[0].message, ::testing::StartsWith("invalid YAML: "));
}

TEST_F(YamlTreeTest, RejectsAliases) {
  auto doc = parseYaml("a: &x 1\nb: *x\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_THAT(problems(), ElementsAre("t.yaml:2:4: error: YAML aliases (`*name`) are not "
                                      "supported; write the value out"));
  EXPECT_TRUE(doc->root().find("b")->isNull());
}

TEST_F(YamlTreeTest, RejectsASecondDocument) {
  auto doc = parseYaml("a: 1\n---\nb: 2\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_THAT(problems(), ElementsAre("t.yaml:2:1: error: only one YAML document is allowed; "
                                      "remove this `---` and what follows"));
}

TEST_F(YamlTreeTest, RejectsNonScalarKeys) {
  auto doc = parseYaml("? [a, b]\n: 1\nc: 2\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_THAT(problems(), ElementsAre("t.yaml:1:3: error: a mapping key must be a string, not a "
                                      "list"));
  EXPECT_EQ(doc->root().children.size(), 1u);
}

TEST_F(YamlTreeTest, GivesANullRootForAnEmptyText) {
  auto doc = parseYaml("", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_TRUE(doc->root().isNull());
  EXPECT_EQ(doc->root().position.line, 1u);
  EXPECT_EQ(doc->root().position.column, 1u);
}

TEST_F(YamlTreeTest, KeepsNodesValidWhenTheDocumentMoves) {
  auto doc = parseYaml("list: [alpha, beta, gamma]\n", "t.yaml", out_);
  ASSERT_TRUE(doc.ok());

  YamlDocument moved = std::move(doc).value();
  std::vector<YamlDocument> many;
  many.push_back(std::move(moved));
  many.emplace_back();

  const YamlNode* list = many[0].root().find("list");
  ASSERT_NE(list, nullptr);
  ASSERT_EQ(list->children.size(), 3u);
  EXPECT_EQ(list->children[2].text, "gamma");
}

TEST_F(YamlTreeTest, KeepsLongScalarsWhole) {
  std::string long_value(300000, 'x');

  auto doc = parseYaml("a: " + long_value + "\nb: short\n", "t.yaml", out_);

  ASSERT_TRUE(doc.ok());
  EXPECT_EQ(doc->root().find("a")->text, long_value);
  EXPECT_EQ(doc->root().find("b")->text, "short");
}

TEST_F(YamlTreeTest, ReaderReadsNumbersWithinRangeOnly) {
  auto doc = parseYaml("n: 42\nbig: 70000\nquoted: \"42\"\nneg: -1\n", "t.yaml", out_);
  ASSERT_TRUE(doc.ok());
  YamlReader reader("t.yaml", out_);

  EXPECT_EQ(reader.readUnsigned(*doc->root().find("n"), "n", 1, 65535), 42u);
  EXPECT_EQ(reader.readUnsigned(*doc->root().find("big"), "big", 1, 65535), std::nullopt);
  EXPECT_EQ(reader.readUnsigned(*doc->root().find("quoted"), "quoted", 0, 100), std::nullopt);
  EXPECT_EQ(reader.readUnsigned(*doc->root().find("neg"), "neg", 0, 100), std::nullopt);

  EXPECT_THAT(problems(),
              ElementsAre("t.yaml:2:6: error: `big` must be between 1 and 65535, found 70000",
                          "t.yaml:3:9: error: expected a number for `quoted`, found a string",
                          "t.yaml:4:6: error: `neg` must be between 0 and 100, found -1: "
                          "negative numbers are not allowed"));
}

TEST_F(YamlTreeTest, ReaderReadsBooleansAndChoices) {
  auto doc = parseYaml("on: true\nlevel: loud\nmode: audit\n", "t.yaml", out_);
  ASSERT_TRUE(doc.ok());
  YamlReader reader("t.yaml", out_);

  EXPECT_EQ(reader.readBool(*doc->root().find("on"), "on"), true);
  EXPECT_EQ(reader.readChoice(*doc->root().find("level"), "level", {"info", "debug"}),
            std::nullopt);
  EXPECT_EQ(reader.readChoice(*doc->root().find("mode"), "mode", {"enforce", "audit"}), "audit");
  EXPECT_THAT(problems(), ElementsAre("t.yaml:2:8: error: invalid level `loud`; expected one of: "
                                      "info, debug"));
}

TEST_F(YamlTreeTest, ReaderChecksFieldsAndRequiredOnes) {
  auto doc = parseYaml("name: x\ncolor: red\n", "t.yaml", out_);
  ASSERT_TRUE(doc.ok());
  YamlReader reader("t.yaml", out_);

  reader.checkFields(doc->root(), "thing", {"name", "colour"});
  EXPECT_EQ(reader.require(doc->root(), "size", "a thing"), nullptr);

  EXPECT_THAT(problems(), ElementsAre("t.yaml:2:1: error: unknown field `color` in thing; allowed "
                                      "fields: name, colour (did you mean `colour`?)",
                                      "t.yaml:1:1: error: a thing is missing required field "
                                      "`size`"));
}

TEST_F(YamlTreeTest, ParsesOnlyPlainDecimals) {
  EXPECT_EQ(parseDecimal("0"), 0u);
  EXPECT_EQ(parseDecimal("65535"), 65535u);
  EXPECT_EQ(parseDecimal("0x10"), std::nullopt);
  EXPECT_EQ(parseDecimal("+1"), std::nullopt);
  EXPECT_EQ(parseDecimal(""), std::nullopt);
  EXPECT_EQ(parseDecimal("99999999999999999999"), std::nullopt);
}

}  // namespace
}  // namespace mseg::policy
