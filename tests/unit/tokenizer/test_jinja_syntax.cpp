// Whitespace handling and syntax errors of the Jinja engine. Expected strings are what jinja2 3.1 gives
// with transformers' trim_blocks=True, lstrip_blocks=True.
#include <gtest/gtest.h>

#include "jinja_test_util.h"
#include "tokenizer/jinja/lexer.h"

namespace ds::jinja {
namespace {

using testing::render;

TEST(JinjaWhitespace, TextAndComments) {
  EXPECT_EQ(render("plain"), "plain");
  EXPECT_EQ(render("a{# comment #}b"), "ab");
  EXPECT_EQ(render("a{# multi\nline #}b"), "ab");
  EXPECT_EQ(render(""), "");
}

TEST(JinjaWhitespace, OneTrailingNewlineIsDropped) {
  EXPECT_EQ(render("text\n"), "text");
  EXPECT_EQ(render("text\n\n"), "text\n");
  EXPECT_EQ(render("a\r\nb\r\n"), "a\nb");  // newlines normalized to \n first
}

TEST(JinjaWhitespace, MinusStripsAllWhitespace) {
  EXPECT_EQ(render("a  \n {{- 'b' -}} \n  c"), "abc");
  EXPECT_EQ(render("a\n  {%- if true -%}\n  b\n  {%- endif -%}\n  c"), "abc");
  EXPECT_EQ(render("a  {#- c -#}  b"), "ab");
}

TEST(JinjaWhitespace, TrimBlocksDropsTheNewlineAfterABlockTag) {
  EXPECT_EQ(render("{% if true %}\nyes\n{% endif %}\nafter"), "yes\nafter");
  // ...but not after a variable tag.
  EXPECT_EQ(render("{{ 'v' }}\nafter"), "v\nafter");
  // A comment tag counts as a block tag.
  EXPECT_EQ(render("x\n{# c #}\ny"), "x\ny");
}

TEST(JinjaWhitespace, LstripBlocksDropsIndentationBeforeBlockTags) {
  EXPECT_EQ(render("list:\n  {% for x in [1, 2] %}\n  - {{ x }}\n  {% endfor %}\ndone"),
            "list:\n  - 1\n  - 2\ndone");
  EXPECT_EQ(render("\t {% if true %}x{% endif %}"), "x");
  // Never before {{ }}, and not when other text precedes the tag on its line.
  EXPECT_EQ(render("  {{ 'v' }}"), "  v");
  EXPECT_EQ(render("a  {% if true %}x{% endif %}"), "a  x");
}

TEST(JinjaWhitespace, PlusDisablesTrimming) {
  EXPECT_EQ(render("a\n  {%+ if true %}b{% endif %}"), "a\n  b");
  EXPECT_EQ(render("{% if true +%}\nkept{% endif %}"), "\nkept");
}

TEST(JinjaWhitespace, RawBlocksAreNotEvaluated) {
  EXPECT_EQ(render("{% raw %}{{ x }} {% if %}{% endraw %}!"), "{{ x }} {% if %}!");
  EXPECT_EQ(render("x  {%- raw -%}  {{ y }}  {%- endraw -%}  z"), "x{{ y }}z");
}

TEST(JinjaLexer, TokensCarryLineAndColumn) {
  const auto tokens = tokenize("ab\n  {{ name }}", LexerOptions{});
  ASSERT_GE(tokens.size(), 4u);
  EXPECT_EQ(tokens[0].type, TokenType::kText);
  EXPECT_EQ(tokens[1].type, TokenType::kVariableBegin);
  EXPECT_EQ(tokens[1].location.line, 2);
  EXPECT_EQ(tokens[1].location.column, 3);
  EXPECT_EQ(tokens[2].type, TokenType::kName);
  EXPECT_EQ(tokens[2].value, "name");
  EXPECT_EQ(tokens[2].location.column, 6);
}

TEST(JinjaLexer, StringLiteralsUsePythonEscapes) {
  EXPECT_EQ(render(R"({{ 'a\nb\tc\\d\'e' }})"), "a\nb\tc\\d'e");
  EXPECT_EQ(render(R"({{ "\u00e9\x41\101" }})"),
            "\xC3\xA9"
            "AA");
  EXPECT_EQ(render(R"({{ 'keeps \d' }})"), "keeps \\d");
  EXPECT_EQ(render(R"({{ 'adj' "acent" }})"), "adjacent");
}

TEST(JinjaLexer, NumberLiterals) {
  EXPECT_EQ(render("{{ 1_000 }} {{ 0x1F }} {{ 0b101 }} {{ 0o17 }} {{ 1.5e3 }} {{ 2E-3 }}"),
            "1000 31 5 15 1500.0 0.002");
}

struct SyntaxCase {
  const char* source;
  int line;
  int column;
  const char* message_part;
};

class JinjaSyntaxError : public ::testing::TestWithParam<SyntaxCase> {};

TEST_P(JinjaSyntaxError, NamesLineAndColumn) {
  const SyntaxCase& c = GetParam();
  try {
    Template t(c.source);
    FAIL() << "parsed: " << c.source;
  } catch (const TemplateSyntaxError& e) {
    EXPECT_EQ(e.line(), c.line) << e.what();
    EXPECT_EQ(e.column(), c.column) << e.what();
    EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("line " + std::to_string(c.line)), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, JinjaSyntaxError,
    ::testing::Values(SyntaxCase{"ok\n{% if x %}never closed", 2, 23, "Unexpected end of template"},
                      SyntaxCase{"{{ 1 + }}", 1, 8, "unexpected 'end of print statement'"},
                      SyntaxCase{"{% frobnicate %}", 1, 4, "unknown tag 'frobnicate'"},
                      SyntaxCase{"{% for x in y %}\n{% endif %}", 2, 4, "unknown tag 'endif'"},
                      SyntaxCase{"{{ 'abc }}", 1, 4, "unexpected char"},
                      SyntaxCase{"a\n{# never closed", 2, 1, "Missing end of comment tag"},
                      SyntaxCase{"{{ (1 + 2 }}", 1, 11, "unexpected '}'"},
                      SyntaxCase{"{% break %}", 1, 4, "outside of a loop"},
                      SyntaxCase{"{% do x %}", 1, 4, "unknown tag 'do'"},
                      SyntaxCase{"{{ x|no_such_filter }}", 1, 6, "No filter named 'no_such_filter'"},
                      SyntaxCase{"\n\n  {{ x is no_such_test }}", 3, 8, "No test named 'no_such_test'"},
                      SyntaxCase{"{% set 1 = 2 %}", 1, 8, "can't assign"},
                      SyntaxCase{"{% macro m(a=1, b) %}{% endmacro %}", 1, 18, "non-default argument"}));

TEST(JinjaSyntax, UnknownFilterInsideIfIsARuntimeError) {
  // jinja2 defers the check inside an if: the template compiles, and only reaching the filter fails.
  EXPECT_EQ(render("{% if false %}{{ x|no_such_filter }}{% endif %}ok"), "ok");
  EXPECT_THROW((void)render("{% if true %}{{ 1|no_such_filter }}{% endif %}"), TemplateRuntimeError);
}

TEST(JinjaSyntax, NestingDepthIsBounded) {
  std::string deep(300, '(');
  deep = "{{ " + deep + "1" + std::string(300, ')') + " }}";
  EXPECT_THROW(Template t(deep), TemplateSyntaxError);
  std::string ifs;
  for (int i = 0; i < 300; ++i) ifs += "{% if true %}";
  EXPECT_THROW(Template t(ifs), TemplateSyntaxError);
}

}  // namespace
}  // namespace ds::jinja
