// Filters, tests and str / dict / list methods, with the output jinja2 3.1 gives.
#include <gtest/gtest.h>

#include "jinja_test_util.h"

namespace ds::jinja {
namespace {

using nlohmann::ordered_json;
using testing::render;

const ordered_json kPeople = {
    {"people",
     {{{"name", "Ann"}, {"age", 31}}, {{"name", "bob"}, {"age", 25}}, {{"name", "Cid"}, {"age", 31}}}}};

TEST(JinjaFilters, Strings) {
  EXPECT_EQ(render("{{ '  hi  '|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'hi'|upper }}|{{ 'HI'|lower }}"),
            "hi|hi|HI|hi");
  EXPECT_EQ(render("{{ 'hello WORLD'|capitalize }}|{{ \"hello world-wide (x) don't\"|title }}"),
            "Hello world|Hello World-Wide (X) Don't");
  EXPECT_EQ(render("{{ 'a-b-c'|replace('-', '+') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'abc'|reverse }}"),
            "a+b+c bba cba");
  EXPECT_EQ(render("[{{ 'mid'|center(9) }}] {{ 'one two  three'|wordcount }}"), "[   mid   ] 3");
  EXPECT_EQ(render("{{ 'The quick brown fox jumps over'|truncate(20) }}"), "The quick brown...");
  EXPECT_EQ(render("{{ '<a href=\"x\">&</a>'|e }}"), "&lt;a href=&#34;x&#34;&gt;&amp;&lt;/a&gt;");
}

TEST(JinjaFilters, Indent) {
  const ordered_json vars = {{"s", "one\ntwo\n\nfour"}};
  EXPECT_EQ(render("{{ s|indent }}", vars), "one\n    two\n\n    four");
  EXPECT_EQ(render("{{ s|indent(2, true) }}", vars), "  one\n  two\n\n  four");
  EXPECT_EQ(render("{{ s|indent('> ', first=true, blank=true) }}", vars), "> one\n> two\n> \n> four");
}

TEST(JinjaFilters, LengthDefaultJoinFirstLast) {
  EXPECT_EQ(
      render("{{ [1, 2]|length }} {{ [1, 2]|count }} {{ '\xC3\xA9t\xC3\xA9'|length }} {{ {'a': 1}|length }}"),
      "2 2 3 1");
  EXPECT_EQ(render("{{ [1, 2, 3]|join }} {{ [1, 2, 3]|join(', ') }}"), "123 1, 2, 3");
  EXPECT_EQ(render("{{ people|join('/', attribute='name') }}", kPeople), "Ann/bob/Cid");
  EXPECT_EQ(render("{{ [3, 1]|first }} {{ [3, 1]|last }} {{ 'abc'|first }} [{{ []|first }}]"), "3 1 a []");
}

TEST(JinjaFilters, Conversions) {
  EXPECT_EQ(render("{{ '42'|int }} {{ '3.7'|int }} {{ 3.7|int }} {{ 'x'|int }} {{ 'x'|int(5) }} {{ "
                   "'0x1A'|int(0, 16) }}"),
            "42 3 3 0 5 26");
  EXPECT_EQ(render("{{ '2.5'|float }} {{ 'x'|float }} {{ 3|float }} {{ -2.5|abs }}"), "2.5 0.0 3.0 2.5");
  EXPECT_EQ(render("{{ 'abc'|list }} {{ {'a': 1}|list }} {{ 42|string }} {{ [1, 'a']|string }}"),
            "['a', 'b', 'c'] ['a'] 42 [1, 'a']");
  // Python's round: half to even on the binary value.
  EXPECT_EQ(
      render("{{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 7|round }}"),
      "2.0 4.0 2.67 3.0 7");
}

TEST(JinjaFilters, MapSelectSortUnique) {
  EXPECT_EQ(render("{{ people|map(attribute='name')|list }}", kPeople), "['Ann', 'bob', 'Cid']");
  EXPECT_EQ(render("{{ [1, 2]|map('string')|join(',') }} {{ ['a']|map('upper')|list }}"), "1,2 ['A']");
  EXPECT_EQ(render("{{ people|selectattr('age', 'equalto', 31)|map(attribute='name')|join(',') }}", kPeople),
            "Ann,Cid");
  EXPECT_EQ(render("{{ people|rejectattr('age', 'eq', 31)|map(attribute='name')|list }}", kPeople),
            "['bob']");
  EXPECT_EQ(render("{{ [1, 2, 3]|select('odd')|list }} {{ [1, 2, 3]|reject('odd')|list }} {{ [0, 1, '', "
                   "'a']|select|list }}"),
            "[1, 3] [2] [1, 'a']");
  EXPECT_EQ(render("{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }}"), "[1, 2, 3] [3, 2, 1]");
  EXPECT_EQ(
      render("{{ ['pear', 'Apple', 'fig']|sort }} {{ ['pear', 'Apple', 'fig']|sort(case_sensitive=true) }}"),
      "['Apple', 'fig', 'pear'] ['Apple', 'fig', 'pear']");
  EXPECT_EQ(render("{{ people|sort(attribute='age')|map(attribute='name')|list }}", kPeople),
            "['bob', 'Ann', 'Cid']");
  EXPECT_EQ(render("{{ [1, 2, 1, 3]|unique|list }} {{ ['a', 'A', 'b']|unique|list }}"),
            "[1, 2, 3] ['a', 'b']");
  EXPECT_EQ(render("{{ {'b': 2, 'a': 1}|dictsort }} {{ {'b': 2, 'a': 1}|items|list }}"),
            "[('a', 1), ('b', 2)] [('b', 2), ('a', 1)]");
  EXPECT_EQ(render("{{ [3, 1]|min }} {{ [3, 1]|max }} {{ [1, 2.5]|sum }} {{ [1, 2, 3]|batch(2)|list }}"),
            "1 3 3.5 [[1, 2], [3]]");
}

TEST(JinjaFilters, FormatAndPercent) {
  EXPECT_EQ(
      render("{{ '%s is %d' % ('Ann', 31) }} {{ '%s-%s'|format('a', 'b') }} {{ '%.2f'|format(3.14159) }}"),
      "Ann is 31 a-b 3.14");
  EXPECT_EQ(
      render("{{ '{} and {}'.format('a', 'b') }} {{ '{1}{0}'.format('x', 'y') }} {{ '{:>4}|'.format('x') }}"),
      "a and b yx    x|");
}

TEST(JinjaFilters, TojsonIsTransformersJsonDumps) {
  const ordered_json vars = {
      {"tool", {{"name", "f"}, {"params", {{"q", "\xC3\xA9\"\n"}, {"n", 1.0}, {"ok", nullptr}}}}}};
  // ensure_ascii=False, ", " / ": " separators, key order kept, no HTML escaping.
  EXPECT_EQ(render("{{ tool|tojson }}", vars),
            R"({"name": "f", "params": {"q": "é\"\n", "n": 1.0, "ok": null}})");
  EXPECT_EQ(render("{{ {'a': [1, {}], 'b': []}|tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': '<&>'}|tojson(sort_keys=true) }}"), R"({"a": "<&>", "b": 1})");
  EXPECT_EQ(render("{{ 'é'|tojson(ensure_ascii=true) }} {{ {'a': 1}|tojson(separators=(',', ':')) }}"),
            R"("\u00e9" {"a":1})");
  EXPECT_THROW((void)render("{{ missing|tojson }}"), TemplateRuntimeError);
}

TEST(JinjaTests, TypeAndValueTests) {
  EXPECT_EQ(render("{{ none is none }} {{ 1 is number }} {{ true is number }} {{ true is integer }} {{ 1.0 "
                   "is float }}"),
            "True True True False True");
  EXPECT_EQ(render("{{ 'a' is string }} {{ {} is mapping }} {{ [] is sequence }} {{ 1 is iterable }} {{ true "
                   "is boolean }}"),
            "True True True False True");
  EXPECT_EQ(
      render(
          "{{ 4 is even }} {{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 'x' is equalto 'x' }} {{ 2 is lt 3 }}"),
      "True True True True True");
  EXPECT_EQ(render("{{ 1 is in [1] }} {{ 'abc' is lower }} {{ 'upper' is filter }} {{ range is callable }}"),
            "True True True True");
  EXPECT_EQ(render("{{ [1] is not none }} {{ not [1] is none }} {{ true is true }} {{ 1 is true }}"),
            "True True True False");
}

TEST(JinjaMethods, StringMethods) {
  EXPECT_EQ(render("{{ 'a,b,,c'.split(',') }} {{ '  a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ "
                   "'a,b,c'.rsplit(',', 1) }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a,b', 'c']");
  EXPECT_EQ(render("{{ '--x--'.strip('-') }}|{{ '  x '.lstrip() }}|{{ ' x  '.rstrip() }}|"), "x|x | x|");
  EXPECT_EQ(
      render("{{ 'hello'.startswith('he') }} {{ 'hello'.endswith(('x', 'lo')) }} {{ 'hello'.find('l') }} "
             "{{ 'hello'.rfind('l') }} {{ 'hello'.count('l') }}"),
      "True True 2 3 2");
  EXPECT_EQ(render("{{ 'hello world'.title() }} {{ \"don't\".title() }} {{ 'aXbXc'.replace('X', '-', 1) }} "
                   "{{ ', '.join(['a', 'b']) }}"),
            "Hello World Don'T a-bXc a, b");
  EXPECT_EQ(render("{{ 'école'.upper() }} {{ 'straße'.upper() }}"),
            "\xC3\x89"
            "COLE STRASSE");
  EXPECT_EQ(render("{{ 'a\\nb\\r\\nc'.splitlines() }} {{ 'a=b=c'.partition('=') }}"),
            "['a', 'b', 'c'] ('a', '=', 'b=c')");
}

TEST(JinjaMethods, DictAndListMethods) {
  const ordered_json vars = {{"d", {{"b", 2}, {"a", 1}}}, {"xs", {1, 2, 2}}};
  EXPECT_EQ(render("{{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}", vars),
            "['b', 'a'] [2, 1] [('b', 2), ('a', 1)]");
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('q') }} {{ d.get('q', 'dflt') }}", vars), "1 None dflt");
  EXPECT_EQ(render("{{ xs.index(2) }} {{ xs.count(2) }}", vars), "1 2");
  // A dict's methods shadow its keys for `.name`, not for `['name']`.
  EXPECT_EQ(render("{{ {'items': 1}['items'] }} {{ {'get': 2}.get('get') }}"), "1 2");
}

}  // namespace
}  // namespace ds::jinja
