#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/ from the repository's fixtures.

    python3 tests/fuzz/make_corpus.py

Seeds are small on purpose (libFuzzer cuts inputs at -max_len): hand-made tokenizer.json files in the
shape of the fixture (DeepSeek-V3's pre-tokenizer, special tokens, ByteLevel decoder) plus variants that
reach every supported component; the fixture strings for the encoder; the model templates and
expected.json's one-feature templates for Jinja; the headers of the fixture checkpoints (with the data
they describe cut down) and hand-made ones for safetensors. Rerunning overwrites the files it writes.
"""
import hashlib
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


# --- tokenizer.json -------------------------------------------------------------------------------------

def byte_level_alphabet():
    # GPT-2's bytes_to_unicode.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BL = byte_level_alphabet()


def bl(text):
    return "".join(BL[b] for b in text.encode())


DIGITS = r"\p{N}{1,3}"
CJK = "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+"
MAIN = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")
BOS = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>"
EOS = "<\uFF5Cend\u2581of\u2581sentence\uFF5C>"


def split(pattern, behavior="Isolated", invert=False, kind="Regex"):
    return {"type": "Split", "pattern": {kind: pattern}, "behavior": behavior, "invert": invert}


def added(i, content, special, lstrip=False, rstrip=False, single_word=False, normalized=None):
    return {"id": i, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": (not special) if normalized is None else normalized, "special": special}


def tiny_tokenizer(all_bytes=True, array_merges=False):
    vocab = {}
    alphabet = range(256) if all_bytes else list(range(0x20, 0x7F)) + [0x0A, 0xE4, 0xBD, 0xA0]
    for b in alphabet:
        vocab[BL[b]] = len(vocab)
    merges = [(" ", "t"), ("h", "e"), (" t", "he"), ("1", "2"), ("\xe4\xbd", "\xa0"), ("\xe4", "\xbd")]
    def raw(s):  # merges above are written in bytes (latin-1 here), like the unit tests' tiny tokenizer
        return "".join(BL[b] for b in s.encode("latin-1"))
    merge_list = []
    for left, right in merges:
        merged = raw(left + right)
        if merged not in vocab:
            vocab[merged] = len(vocab)
        merge_list.append([raw(left), raw(right)] if array_merges else f"{raw(left)} {raw(right)}")
    n = len(vocab)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            added(n, BOS, True), added(n + 1, EOS, True), added(n + 2, "<\uFF5CUser\uFF5C>", True),
            added(n + 3, "<think>", True), added(n + 4, "<mask>", False, lstrip=True, rstrip=True),
            added(n + 5, "ab", False, single_word=True),
        ],
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            split(DIGITS), split(CJK), split(MAIN),
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [],
            "special_tokens": {BOS: {"id": BOS, "ids": [n], "tokens": [BOS]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merge_list},
    }


def tokenizer_seeds():
    base = tiny_tokenizer()
    yield base
    yield tiny_tokenizer(array_merges=True)
    yield tiny_tokenizer(all_bytes=False)
    t = tiny_tokenizer(); t["normalizer"] = {"type": "NFC"}; yield t
    t = tiny_tokenizer(); t["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}]}; yield t
    t = tiny_tokenizer(); t["normalizer"] = None; t["post_processor"] = None; t["decoder"] = None; yield t
    t = tiny_tokenizer()
    t["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}
    yield t
    for behavior in ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]:
        t = tiny_tokenizer()
        t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            split(" ", behavior, kind="String"), split("\\d+", behavior, invert=True),
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}
        yield t
    t = tiny_tokenizer()
    t["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": False}]}
    yield t
    t = tiny_tokenizer()
    t["pre_tokenizer"]["pretokenizers"].insert(0, split(r"\w+|\s+|\h\H\u0041[\w\W]", "Isolated"))
    yield t
    t = tiny_tokenizer(); t["post_processor"] = {"type": "ByteLevel", "trim_offsets": False}; yield t
    n = len(t["model"]["vocab"])
    t = tiny_tokenizer()
    t["post_processor"] = {"type": "BertProcessing", "cls": [BOS, n], "sep": [EOS, n + 1]}
    yield t
    t = tiny_tokenizer()
    t["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel"}, dict(base["post_processor"])]}
    yield t
    t = tiny_tokenizer(); t["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteLevel"}]}; yield t
    t = tiny_tokenizer(all_bytes=False)
    t["model"]["vocab"]["<unk>"] = len(t["model"]["vocab"])
    t["model"].update({"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True})
    yield t
    t = tiny_tokenizer()
    t["model"].update({"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>", "ignore_merges": True})
    yield t
    t = tiny_tokenizer()
    t["added_tokens"] = [added(5, "he", False, normalized=True), added(999, "<s>", True),
                         added(1000, "<s>", False), added(7, "", True), added(8, "\u00e9", False)]
    t["normalizer"] = {"type": "NFC"}
    yield t
    # The smallest one that loads.
    yield {"model": {"vocab": {"a": 0}, "merges": []}}


def write_tokenizer_seeds():
    for t in tokenizer_seeds():
        write("fuzz_tokenizer_json", json.dumps(t, ensure_ascii=False, indent=None))
    # The same tokenizer with ASCII escapes, as some exporters write it.
    write("fuzz_tokenizer_json", json.dumps(tiny_tokenizer(), ensure_ascii=True))


# --- text for the fixture tokenizer ----------------------------------------------------------------------

def write_encode_seeds():
    expected = json.loads((FIXTURES / "tokenizer" / "expected.json").read_text())
    texts = []
    def collect(node):
        if isinstance(node, dict):
            for key in ("text", "input"):
                if isinstance(node.get(key), str):
                    texts.append(node[key])
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
    collect(expected)
    for text in dict.fromkeys(texts):
        if len(text.encode()) <= 4096:
            write("fuzz_tokenizer_encode", text)
    for text in ["", "a", " the 12 你好", "<｜User｜>hi<｜Assistant｜><think>\n</think>",
                 "\r\n\r\n   \t x", "👩‍👩‍👧‍👦 e\u0301 ｶﾞ 123456789", BOS + "x" + EOS]:
        write("fuzz_tokenizer_encode", text)
    write("fuzz_tokenizer_encode", b"\xe4\xbd")        # an unfinished character: encode must refuse it
    write("fuzz_tokenizer_encode", b"\xed\xa0\x80ab")  # a surrogate


# --- chat templates --------------------------------------------------------------------------------------

def write_jinja_seeds():
    for path in sorted((FIXTURES / "templates").glob("*.jinja")):
        write("fuzz_jinja", path.read_bytes())
    expected = json.loads((FIXTURES / "templates" / "expected.json").read_text())
    sources = []
    def collect(node):
        if isinstance(node, dict):
            for key in ("template", "source"):
                if isinstance(node.get(key), str):
                    sources.append(node[key])
            for v in node.values():
                collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)
    collect(expected)
    for source in dict.fromkeys(sources):
        if len(source.encode()) <= 4096:
            write("fuzz_jinja", source)


# --- safetensors -----------------------------------------------------------------------------------------

def safetensors(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data


def shrink_header(path, max_tensors=6):
    """The fixture file's header with its first few tensors, data cut to what they need."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data_region = raw[8 + n:]
    out, data, meta = {}, b"", header.pop("__metadata__", None)
    for name, entry in list(header.items())[:max_tensors]:
        begin, end = entry["data_offsets"]
        size = min(end - begin, 64)
        if size != end - begin:  # keep the shape consistent with the shortened data
            entry = dict(entry, shape=[size // {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}[entry["dtype"]]])
        chunk = data_region[begin:begin + size]
        out[name] = dict(entry, data_offsets=[len(data), len(data) + len(chunk)])
        data += chunk
    if meta is not None:
        out["__metadata__"] = meta
    return safetensors(out, data)


def write_safetensors_seeds():
    for path in sorted(FIXTURES.glob("*/*.safetensors")):
        write("fuzz_safetensors", shrink_header(path))
    write("fuzz_safetensors", safetensors({}))
    write("fuzz_safetensors", safetensors({"__metadata__": {"format": "pt"}}))
    write("fuzz_safetensors", safetensors(
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
         "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
         "s": {"dtype": "F8_E4M3", "shape": [], "data_offsets": [22, 23]},
         "e": {"dtype": "F16", "shape": [0, 5], "data_offsets": [23, 23]}}, bytes(range(23))))
    write("fuzz_safetensors", safetensors(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, bytes(8)))  # overlap: refused
    write("fuzz_safetensors", struct.pack("<Q", 2**64 - 1) + b"{}")  # absurd header length: refused


if __name__ == "__main__":
    write_tokenizer_seeds()
    write_encode_seeds()
    write_jinja_seeds()
    write_safetensors_seeds()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.name}: {len(files)} seeds, largest {max(f.stat().st_size for f in files)} bytes")
