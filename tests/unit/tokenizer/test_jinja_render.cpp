// Rendering: values, operators, control flow, scoping, macros and undefined values, each with the
// output jinja2 3.1 gives (transformers' environment).
#include <gtest/gtest.h>

#include "jinja_test_util.h"

namespace ds::jinja {
namespace {

using nlohmann::ordered_json;
using testing::render;

TEST(JinjaRender, PrintsValuesAsPythonStr) {
  EXPECT_EQ(render("{{ 'str' }}|{{ 42 }}|{{ 1.5 }}|{{ true }}|{{ none }}"), "str|42|1.5|True|None");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 2.0] }}"), "[1, 'a', None, True, 2.0]");
  EXPECT_EQ(render("{{ {'k': 'v', 'n': 1} }}"), "{'k': 'v', 'n': 1}");
  EXPECT_EQ(render("{{ (1, 'x') }} {{ (1,) }} {{ () }}"), "(1, 'x') (1,) ()");
  EXPECT_EQ(render("{{ [\"it's\", 'say \"hi\"', 'tab\\t'] }}"), "[\"it's\", 'say \"hi\"', 'tab\\t']");
}

TEST(JinjaRender, FloatsPrintLikePythonRepr) {
  EXPECT_EQ(render("{{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }}"),
            "1e+20 1e+16 1000000000000000.0 0.0001 1e-05");
  EXPECT_EQ(render("{{ 1/3 }} {{ 10/2 }} {{ -0.0 }} {{ 0.1 + 0.2 }}"),
            "0.3333333333333333 5.0 -0.0 0.30000000000000004");
}

TEST(JinjaRender, JsonInputsBecomePythonValues) {
  const ordered_json vars = {{"msg",
                              {{"role", "user"},
                               {"content", "hi"},
                               {"n", 3},
                               {"x", 2.5},
                               {"ok", true},
                               {"none", nullptr},
                               {"list", {1, 2}}}}};
  EXPECT_EQ(
      render("{{ msg.role }} {{ msg['content'] }} {{ msg.n + 1 }} {{ msg.x }} {{ msg.ok }} {{ msg.none }} "
             "{{ msg.list }}",
             vars),
      "user hi 4 2.5 True None [1, 2]");
  // Dicts keep the request's key order.
  EXPECT_EQ(render("{{ d }}", {{"d", {{"z", 1}, {"a", 2}}}}), "{'z': 1, 'a': 2}");
}

TEST(JinjaRender, Arithmetic) {
  EXPECT_EQ(render("{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }}"),
            "10 -3 21 3.5 3 -4");
  EXPECT_EQ(render("{{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }}"),
            "1 2 1024 0.5 3.0");
  EXPECT_EQ(render("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1, 2] + [3] }} {{ true + 1 }}"),
            "ababab [1, 1] [1, 2, 3] 2");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none ~ true ~ missing }}"), "a1NoneTrue");
}

TEST(JinjaRender, Precedence) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 2 ** 3 ** 2 }}"), "7 9 4 64");
  // Filters bind to the operand; `~` binds tighter than `+`.
  EXPECT_EQ(render("{{ 2 * 3|string }} {{ 'n' ~ 2 * 3 }} {{ -3|abs }}"), "33 n6 3");
}

TEST(JinjaRender, ComparisonsAndLogic) {
  EXPECT_EQ(render("{{ 1 == 1.0 }} {{ 2 < 3 < 4 }} {{ 3 < 2 }} {{ [1, 2] < [1, 3] }} {{ 'a' < 'b' }}"),
            "True True False True True");
  EXPECT_EQ(render("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or [] }} {{ not none }}"), "x y [] True");
  EXPECT_EQ(render("{{ 2 in [1, 2] }} {{ 5 not in [1] }} {{ 'ell' in 'hello' }} {{ 'a' in {'a': 1} }}"),
            "True True True True");
  EXPECT_EQ(render("{{ 'yes' if 3 > 2 else 'no' }}[{{ 'x' if false }}]"), "yes[]");
}

TEST(JinjaRender, AttributesSubscriptsAndSlices) {
  const ordered_json vars = {{"xs", {1, 2, 3, 4}}, {"s", "h\xC3\xA9llo"}};
  EXPECT_EQ(render("{{ xs[0] }} {{ xs[-1] }} {{ xs[1:3] }} {{ xs[::-1] }} {{ xs[::2] }}", vars),
            "1 4 [2, 3] [4, 3, 2, 1] [1, 3]");
  EXPECT_EQ(render("{{ s[1] }} {{ s[1:3] }} {{ s|length }}", vars), "\xC3\xA9 \xC3\xA9l 5");
  EXPECT_EQ(render("[{{ xs[10] }}][{{ {'a': 1}.b }}]", vars), "[][]");
}

TEST(JinjaRender, IfElifElse) {
  EXPECT_EQ(
      render("{% for n in [1, 5, 10] %}{% if n < 3 %}s{% elif n < 8 %}m{% else %}b{% endif %}{% endfor %}"),
      "smb");
}

TEST(JinjaRender, ForLoopVariables) {
  EXPECT_EQ(render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}"
                   "{{ loop.last }}{{ loop.length }} {% endfor %}"),
            "103TrueFalse3 212FalseFalse3 321FalseTrue3 ");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}[{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}]{% endfor %}"),
            "[<1>2][1<2>3][2<3>]");
  EXPECT_EQ(render("{% for x in [1, 2, 3] %}{{ loop.cycle('a', 'b') }}{% endfor %}"), "aba");
}

TEST(JinjaRender, ForElseFilterUnpackAndControl) {
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for x in [3, 1, 2] if x > 1 %}{{ x }}{{ loop.length }} {% endfor %}"), "32 22 ");
  EXPECT_EQ(render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(
      render("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}"
             "{% endif %}{{ x }}{% endfor %}"),
      "0134");
  // jinja2 counts an iteration only when its body ran to the end: else runs after all-continue.
  EXPECT_EQ(render("{% for x in [1] %}{% continue %}{% else %}e{% endfor %}"), "e");
  EXPECT_EQ(render("[{% for x in missing %}{{ x }}{% endfor %}]"), "[]");  // undefined iterates as empty
}

TEST(JinjaRender, LoopScopesAndNamespaces) {
  // Assignments in a loop body vanish with the iteration...
  EXPECT_EQ(
      render("{% set x = 0 %}{% for i in [1, 2] %}{{ x }}{% set x = x + i %}{{ x }};{% endfor %}{{ x }}"),
      "01;02;0");
  // ...which is why chat templates carry state in a namespace.
  EXPECT_EQ(
      render("{% set ns = namespace(n=0, seen=false) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
             "{% endfor %}{{ ns.n }} {{ ns.seen }}"),
      "6 False");
  // if does not open a scope.
  EXPECT_EQ(render("{% if true %}{% set y = 5 %}{% endif %}{{ y }}"), "5");
}

TEST(JinjaRender, SetForms) {
  EXPECT_EQ(render("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 3, 4 %}{{ t }}"), "12(3, 4)");
  EXPECT_EQ(render("{% set block %}\n  inner\n{% endset %}[{{ block }}]"), "[  inner\n]");
  EXPECT_EQ(render("{% set s | upper %}quiet{% endset %}{{ s }}"), "QUIET");
  EXPECT_EQ(render("{% filter upper %}hello {{ 'world' }}{% endfilter %}"), "HELLO WORLD");
  EXPECT_EQ(render("{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]"), "3[]");
}

TEST(JinjaRender, Macros) {
  EXPECT_EQ(render("{% macro greet(name, greeting='Hello') %}{{ greeting }}, {{ name }}!{% endmacro %}"
                   "{{ greet('Ann') }} {{ greet('Bob', 'Hi') }} {{ greet(greeting='Yo', name='Cid') }}"),
            "Hello, Ann! Hi, Bob! Yo, Cid!");
  EXPECT_EQ(render("{% macro m(a) %}{{ a }}|{{ varargs }}|{{ kwargs }}{% endmacro %}{{ m(1, 2, x=3) }}"),
            "1|(2,)|{'x': 3}");
  EXPECT_EQ(render("{% macro f(n) %}{% if n <= 1 %}1{% else %}{{ n * f(n - 1)|int }}{% endif %}{% endmacro "
                   "%}{{ f(5) }}"),
            "120");
  // A macro sees the defining scope as it is when called.
  EXPECT_EQ(
      render("{% set b = 1 %}{% macro show() %}{{ b }}{% endmacro %}{{ show() }}{% set b = 2 %}{{ show() }}"),
      "12");
  EXPECT_EQ(render("{% macro wrap(t) %}<{{ t }}>{{ caller() }}</{{ t }}>{% endmacro %}{% call wrap('b') "
                   "%}x{% endcall %}"),
            "<b>x</b>");
}

TEST(JinjaRender, UndefinedFollowsJinja2DefaultUndefined) {
  EXPECT_EQ(render("[{{ missing }}]"), "[]");
  EXPECT_EQ(render("{{ missing is defined }} {{ missing is undefined }} {{ missing|length }}"),
            "False True 0");
  EXPECT_EQ(render("{{ {'a': 1}.b is defined }} {{ missing == missing }} {{ not missing }}"),
            "False True True");
  EXPECT_EQ(render("{{ missing|default('d') }} {{ none|default('d') }} {{ ''|default('d', true) }}"),
            "d None d");
  // Using it in arithmetic, calling it, or reading an attribute of it raises, as jinja2's Undefined does
  // (an attribute of a defined value that is missing is undefined; an attribute of undefined is an error).
  EXPECT_THROW((void)render("{{ missing + 1 }}"), TemplateRuntimeError);
  EXPECT_THROW((void)render("{{ missing.attr }}"), TemplateRuntimeError);
  EXPECT_THROW((void)render("{{ missing() }}"), TemplateRuntimeError);
  try {
    (void)render("line one\n{{ d.a.b }}", {{"d", ordered_json::object()}});
    FAIL();
  } catch (const TemplateRuntimeError& e) {
    EXPECT_EQ(e.kind(), "UndefinedError");
    EXPECT_EQ(e.message(), "'dict object' has no attribute 'a'");
    EXPECT_EQ(e.line(), 2);
  }
}

TEST(JinjaRender, GlobalsAndGenerationTag) {
  EXPECT_EQ(render("{{ range(3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1) }}"),
            "[0, 1, 2] [5, 3, 1] {'a': 1}");
  EXPECT_EQ(render("{{ strftime_now('%Y-%m-%d %H:%M') }} {{ strftime_now('%A %d %B') }}"),
            "2025-03-14 15:09 Friday 14 March");
  EXPECT_EQ(render("{% generation %}kept{% endgeneration %}"), "kept");
}

}  // namespace
}  // namespace ds::jinja
