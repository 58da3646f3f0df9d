// Tokenizes the fixture strings of tests/fixtures/tokenizer/expected.json with Tokenizers.js (a pure
// JavaScript implementation of HuggingFace tokenizers) and compares ids and decodes with the reference
// that HF `tokenizers` wrote. Usage: node compare.mjs [fixture_dir]. Exit code 0 when all cases agree.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2] ?? path.join(here, "..", "..", "fixtures", "tokenizer");
const read = (name) => JSON.parse(fs.readFileSync(path.join(dir, name), "utf8"));

const expected = read("expected.json");
const config = fs.existsSync(path.join(dir, "tokenizer_config.json")) ? read("tokenizer_config.json") : {};
const tokenizer = new Tokenizer(read("tokenizer.json"), config);

// Tokenizers.js refuses to decode an empty list; HF returns "".
const decode = (ids, skip) =>
  ids.length === 0
    ? ""
    : tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
const encode = (text, special) => Array.from(tokenizer.encode(text, { add_special_tokens: special }).ids);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

let passed = 0;
let failed = 0;
const check = (what, got, want) => {
  if (same(got, want)) {
    passed += 1;
  } else {
    failed += 1;
    console.log(`FAIL ${what}\n  got:  ${JSON.stringify(got)}\n  want: ${JSON.stringify(want)}`);
  }
};

for (const c of expected.encode) {
  const label = JSON.stringify(c.text).slice(0, 80);
  check(`encode ${label}`, encode(c.text, false), c.ids);
  check(`encode+special ${label}`, encode(c.text, true), c.ids_with_special);
  check(`decode ${label}`, decode(c.ids, false), c.decoded);
  check(`decode skip_special ${label}`, decode(c.ids_with_special, true), c.decoded_skip_special);
}
for (const c of expected.decode) {
  check(`decode ${JSON.stringify(c.ids)}`, decode(c.ids, false), c.text);
  check(`decode skip_special ${JSON.stringify(c.ids)}`, decode(c.ids, true), c.text_skip_special);
}

console.log(`tokenizers.js vs ${path.relative(process.cwd(), dir) || "."}/expected.json`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
