#!/usr/bin/env python3
# make_tokenizer_goldens.py: writes tests/golden/tokenizer/cases.jsonl, the golden cases that
# tests/models/test_tokenizer.cc checks models/tokenizer.cc against. What it is not: a test
# runner (the C++ test is), nor needed by CI (the file is committed; only regenerating it
# needs `transformers`).
#
# Rerun from the repository root (needs `python3 -m pip install transformers`):
#     python3 tests/golden/make_tokenizer_goldens.py   # rewrites tests/golden/tokenizer/*
#
# The reference is Hugging Face's slow, pure-Python BertTokenizer: `transformers.BertTokenizer`
# before transformers 5, `BertTokenizerLegacy` from 5 on (where `BertTokenizer` became the
# Rust-backed one). Its Unicode tables are those of the running Python's `unicodedata`; the
# C++ side uses utf8proc's. The hard strings below therefore avoid characters assigned only
# in recent Unicode versions, where the two tables can disagree.
#
# One JSON object per line, with "kind" one of
#   tokenize  {tokenizer, text, tokens, ids}
#   encode    {tokenizer, text, text_pair|null, add_special_tokens, truncation, max_length,
#              padding, input_ids, token_type_ids, attention_mask}
#   batch     {tokenizer, texts, text_pairs|null, truncation, max_length, padding,
#              input_ids, token_type_ids, attention_mask}   (2-D)
#   decode    {tokenizer, ids, skip_special_tokens, text}
# where "tokenizer" names one of TOKENIZERS below on the bert-base-uncased vocab, or
# "chars_uncased" / "chars_cased" on tokenizer/char_vocab.txt (see write_char_vocab), or
# "tiny-bert", the fixture's tokenizer.json run through the `tokenizers` library; truncation
# is null | "longest_first" | "only_second" and padding is null | "longest" | "max_length".
#
# The script also runs the Rust-backed tokenizer on the same uncased strings and prints where
# it disagrees with the slow one, for the record; those results are not stored.

import json
import os
import unicodedata
from pathlib import Path

import transformers
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ACCEL_SHARED_DATA_DIR", HERE.parents[1].parent / "shared" / "data"))
VOCAB = DATA / "vocab" / "bert-base-uncased-vocab.txt"
TINY_BERT_JSON = DATA / "tiny-bert" / "tokenizer.json"
OUT = HERE / "tokenizer" / "cases.jsonl"
CHAR_VOCAB = HERE / "tokenizer" / "char_vocab.txt"

# Strings chosen to hit every branch of BasicTokenizer + WordpieceTokenizer.
HARD_STRINGS = [
    # empty, whitespace only, whitespace kinds
    "", " ", "   ", "\t", "\n", "\r\n", " \t\r\n ", "\u00a0", "\u3000", "\u2003\u2009\u202f",
    "a\tb\nc\rd", "a\u00a0b", "a\u1680b", "a\u2000b\u200ac", "a\u205fb", "a\u3000b",
    "a\u2028b", "a\u2029b", "a\u0085b", "a\x0bb\x0cc", "a\x1cb\x1dc\x1ed\x1ff",
    "  leading and trailing  ", "many     spaces   between",
    # control, format, zero-width, replacement and unassigned characters
    "a\x00b", "\x00", "a\x07b", "a\x1bb", "a\x7fb", "a\x80b\x9fc", "a\ufffdb", "\ufffd",
    "zero\u200bwidth", "zero\u200cnon\u200djoiner", "word\u2060joiner", "\ufeffbom at start",
    "soft\u00adhyphen", "bidi\u200emarks\u200f", "\u202aembedded\u202c", "a\u2066b\u2069",
    "private\ue000use", "unassigned\u0378here", "non\ufffecharacter", "plane16\U0010fffdend",
    "tag\U000e0041chars", "a\u180eb", "mongolian\u180bvariation",
    # casing, accents and combining marks
    "Hello World", "HELLO WORLD", "hElLo WoRlD", "UNAFFABLE", "unaffable",
    "café", "cafe\u0301", "CAFÉ", "naïve résumé", "Ångström", "Crème Brûlée",
    "jalapeño piñata", "Zoë Saldaña", "São Paulo", "Kraków Łódź", "Dvořák Škoda",
    "Straße", "STRASSE", "ẞ", "Ærøskøbing", "Þór", "Ðð", "œuvre Œ",
    "İstanbul", "istanbul", "IıİiI\u0307", "KIRIKKALE", "Ǆ ǅ ǆ", "ǈ ǋ ǲ",
    "e\u0301\u0302\u0303", "\u0301", "\u0301\u0302 alone", "a\u0300\u0316", "a\u20dd",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357",
    "ﬁne ﬂow ﬀ ﬃ ﬆ", "Ⅻ ⅻ", "½ ¾ ²³ ₂", "ª º", "µ", "ǰ", "ΐ", "\u1e9b\u0323",
    "Ελληνικά", "ΟΔΟΣ", "ΟΔΟΣ.", "ΣΑΣ ΣΑ Σ", "ὈΔΥΣΣΕΎΣ", "Ἀθῆναι", "ς σ Σ",
    # the final-sigma context: cased and case-ignorable neighbours
    "ΑΣ'Α", "Α'Σ", "ΑΣ.Α", "ΑΣ:Α", "ΑΣ\u0301", "ΑΣ\u00adΑ", "ΑΣ1", "1Σ", "ªΣ", "ºΣ", "ʰΣ",
    "\U0001f130Σ", "ⓐΣ", "ΑʰΣ", "ΑΣʰΑ", "Α\u0301Σ",
    # singleton decompositions, visible to NFC: Greek varia -> '`', Greek question mark -> ';'
    "a\u1fefb", "what\u037e", "x\u0387y", "\u212b", "\u2126", "\u212a",
    "Москва", "ПРИВЕТ мир", "Ёлка", "Україна Ї", "Српски Ђ", "Ⴀ ⴀ", "Ꭰ ꭰ", "Ա ա",
    # CJK (split into single characters) and neighbours that are not split
    "中文", "中文字符测试", "我爱北京天安门。", "日本語の文章です", "漢字かなカナ交じり文",
    "ひらがな", "カタカナ", "ｶﾀｶﾅ", "ガ", "カ\u3099", "ー", "〜", "々",
    "한국어", "안녕하세요 세계", "\u1100\u1161\u11a8", "ㄱㄴㄷ",
    "\u3400\u4db5", "\U00020000\U0002a6d6", "\U0002a700\U0002b734", "\U0002b740\U0002b81d",
    "\U0002b820\U0002cea1", "\uf900\ufa0b\ufad9", "\U0002f800\U0002fa1d",
    "\u2e80\u2f00\u3105", "\U00030000", "abc中def", "12中34", "中,文", "中 文 ",
    # punctuation of many kinds
    "Hello, world!", "what?!?", "a.b.c", "...", "--", "—", "a–b—c", "«quoted»",
    "“smart quotes”", "‘single’", "„German“", "「括弧」", "『二重』", "【bracket】",
    "¿Qué? ¡Sí!", "a·b", "a•b", "a…b", "a‽b", "a§b¶c", "#hashtag", "@mention",
    "$100", "€50", "£20", "¥1000", "₹500", "a+b=c", "x^2", "`code`", "~tilde~",
    "a|b", "a\\b", "a/b", "<html>", "{json: 1}", "[brackets]", "(parens)", "a_b", "a-b",
    "100%", "a&b", "it's", "don't", "'quoted'", "\"double\"", "a;b:c", "؟،؛", "।॥",
    "。、", "！？", "\u2016\u2020\u2021", "\u2010\u2011\u2012", "\u2e18\u2e2e",
    "©®™", "°C", "±×÷", "→←↑↓", "♠♣♥♦", "★☆", "∀x∈ℝ", "√2", "∞",
    # numbers, URLs, emails, code
    "123", "3.14159", "1,000,000", "1e-10", "0x1F", "12:30", "2024-01-01", "+1 (555) 123-4567",
    "https://example.com/path?q=1&r=2#frag", "www.huggingface.co", "user@example.com",
    "first.last+tag@sub.domain.org", "C:\\Users\\name", "/usr/local/bin", "snake_case_name",
    "camelCaseName", "PascalCaseName", "kebab-case-name", "v1.2.3-rc.1", "iPhone 15 Pro",
    # long words and many word pieces
    "a" * 100, "a" * 101, "b" * 150 + " c", "é" * 100, "é" * 101, "中" * 150,
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism", "floccinaucinihilipilification",
    "hippopotomonstrosesquippedaliophobia", "unbelievably untranslatable",
    "xqzjvkwpfmbg", "thisisaverylongwordwithoutanyspaces", "tokenization tokenizer",
    "embeddings", "transformers", "##ing", "##", "#",
    # emoji, ZWJ sequences, variation selectors, flags
    "😀", "hello😀world", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈",
    "❤\ufe0f", "☺\ufe0e", "🇺🇸🇫🇷", "1\ufe0f\u20e3", "🤖 robots", "\U0001f9d1\u200d\U0001f4bb",
    # scripts: Arabic, Hebrew, Devanagari, Thai, and more
    "مرحبا بالعالم", "اَلْعَرَبِيَّةُ", "שלום עולם", "עִבְרִית", "नमस्ते दुनिया", "हिन्दी",
    "สวัสดีชาวโลก", "ภาษาไทย", "ሰላም", "ქართული", "Հայերեն", "ಕನ್ನಡ", "தமிழ்", "বাংলা",
    "ພາສາລາວ", "ភាសាខ្មែរ", "မြန်မာ", "བོད་ཡིག", "ᚠᚢᚦ", "𐌰𐌱", "\U0001d400\U0001d401",
    "Tiếng Việt", "Türkçe ğüşıöç", "Română ăâîșț", "Íslenska", "Eesti õ", "Malti ħ ġ ż",
    # full-width and compatibility forms
    "ｈｅｌｌｏ", "ＨＥＬＬＯ", "１２３", "ｈｅｌｌｏ！", "（ａ）", "ﾊﾝｶｸ", "㍻", "㈱", "ℌℑ", "Ⓐⓑ",
    "\U0001f130\U0001f150", "ᴬᴮ", "ʰʲ",
    # special tokens inside text (never split when exact, split when not)
    "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[CLS] hello [SEP]", "a[CLS]b",
    "hello [MASK] world", "[MASK][MASK]", "[cls] lowercase", "[CLS ]", "[ CLS]",
    "[CLS]\u0301", "x[SEP]", "[SEP]y", " [PAD] ", "[UNK]nown", "[MASK].", "[unused0]",
    # mixed everything
    "Café 中文 😀 [SEP] naïve!",
    "The quick brown fox jumps over the lazy dog.",
    "I can't believe it's not butter!",
    "He said, \"Hello, world!\" and left.",
    "Prices rose 3.5% to $1,234.56 on Jan. 5th.",
    "E=mc² — Einstein (1905)",
    "Mr. O'Neil-Smith's co-op",
    "rock 'n' roll", "ľščťžýáíé", "tab\tseparated\tvalues",
]

# Inputs for the cased and accent-keeping variants: where casing and accents matter.
VARIANT_STRINGS = [
    "Hello World", "HELLO", "café", "cafe\u0301", "CAFÉ", "naïve résumé", "Ångström",
    "Straße", "İstanbul", "ΟΔΟΣ.", "Москва", "Ǆ ǅ", "ﬁne", "ｈｅｌｌｏ", "中文 text",
    "e\u0301\u0302", "\u0301", "[CLS] Hello [SEP]", "[cls]", "Zoë", "Tiếng Việt",
    "a\x00b\ufffdc", "ガ カ\u3099", "hello😀", "the quick brown fox", "1,000",
    "don't", "São Paulo", "\u1e9b\u0323", "Ἀθῆναι", "a\u1fefb", "what\u037e", "x\u0387y",
    "\u212b \u2126 \u212a", "ΑΣ'Α ªΣ",
]

TOKENIZERS = {
    "uncased": dict(do_lower_case=True),
    "cased": dict(do_lower_case=False),
    "uncased_keep_accents": dict(do_lower_case=True, strip_accents=False),
    "cased_strip_accents": dict(do_lower_case=False, strip_accents=True),
}


def slow_bert_classes():
    """(BertTokenizer, BasicTokenizer), the pure-Python ones."""
    try:  # transformers >= 5: the pure-Python tokenizer lives on as BertTokenizerLegacy
        from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer, BertTokenizerLegacy
        return BertTokenizerLegacy, BasicTokenizer
    except ImportError:
        from transformers.models.bert.tokenization_bert import BasicTokenizer
        return transformers.BertTokenizer, BasicTokenizer


def fast_bert(vocab_path):
    try:  # transformers >= 5
        from transformers.models.bert.tokenization_bert_legacy import load_vocab
        return transformers.BertTokenizer(vocab=load_vocab(str(vocab_path)), do_lower_case=True)
    except ImportError:
        return transformers.BertTokenizerFast(vocab_file=str(vocab_path), do_lower_case=True)


def write_char_vocab(basic_tokenizer_class, texts):
    """A vocab of the special tokens plus every character, bare and "##"-prefixed, that
    BasicTokenizer leaves in `texts` under any of TOKENIZERS. WordPiece then spells each word
    out character by character, so the golden tokens pin every character of the normalized
    text, where the bert-base vocab would hide most differences behind [UNK]."""
    chars = set()
    for kwargs in TOKENIZERS.values():
        basic = basic_tokenizer_class(**kwargs)
        for text in texts:
            for word in basic.tokenize(text):
                chars.update(word)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(chars) + ["##" + c for c in sorted(chars)]
    with open(CHAR_VOCAB, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(token + "\n" for token in tokens))


def read_tsv_column(path, columns, skip_header=True):
    """Rows split on tabs with no quote handling; utf-8-sig drops the BOM on line 1."""
    with open(path, encoding="utf-8-sig") as f:
        lines = f.read().split("\n")
    if skip_header:
        lines = lines[1:]
    rows = [line.split("\t") for line in lines if line]
    return [[row[c] for c in columns] for row in rows]


def tokenize_case(name, tok, text):
    tokens = tok.tokenize(text)
    return {"kind": "tokenize", "tokenizer": name, "text": text, "tokens": tokens,
            "ids": tok.convert_tokens_to_ids(tokens)}


def encode_case(name, tok, text, text_pair=None, add_special_tokens=True, truncation=None,
                max_length=None, padding=None):
    enc = tok(text, text_pair, add_special_tokens=add_special_tokens,
              truncation=truncation or False, max_length=max_length, padding=padding or False,
              return_token_type_ids=True, return_attention_mask=True)
    return {"kind": "encode", "tokenizer": name, "text": text, "text_pair": text_pair,
            "add_special_tokens": add_special_tokens, "truncation": truncation,
            "max_length": max_length, "padding": padding, "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"], "attention_mask": enc["attention_mask"]}


def batch_case(name, tok, texts, text_pairs=None, truncation=None, max_length=None,
               padding="longest"):
    enc = tok(texts, text_pairs, truncation=truncation or False, max_length=max_length,
              padding=padding, return_token_type_ids=True, return_attention_mask=True)
    return {"kind": "batch", "tokenizer": name, "texts": texts, "text_pairs": text_pairs,
            "truncation": truncation, "max_length": max_length, "padding": padding,
            "input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
            "attention_mask": enc["attention_mask"]}


def decode_case(name, tok, ids, skip_special_tokens):
    return {"kind": "decode", "tokenizer": name, "ids": ids,
            "skip_special_tokens": skip_special_tokens,
            "text": tok.decode(ids, skip_special_tokens=skip_special_tokens)}


def tiny_bert_cases():
    """The fixture's toy tokenizer.json (vocab t5..t255, no normalizer, Whitespace
    pre-tokenizer), run through the Rust `tokenizers` library that the file is written for."""
    tok = Tokenizer.from_file(str(TINY_BERT_JSON))
    texts = ["t5 t6 t7", "t12,t13", "t100t", "t1234", "T5", "hello t42", "", "t5!!t6",
             "t7 [SEP] t8", "t9\tt10\nt11", "t255 t256", "t5_t6", "t5's", "t5 ⓐ t6",
             "t5\x1ct6", "t5\x85t6", "t5\u2028t6", "t5\U0001f130t6", "t5ⓐt6", "t5\u200dt6",
             "t5\x00t6", "t5\u0301 t6"]
    cases = []
    for text in texts:
        enc = tok.encode(text, add_special_tokens=False)
        cases.append({"kind": "tokenize", "tokenizer": "tiny-bert", "text": text,
                      "tokens": enc.tokens, "ids": enc.ids})
    for text, pair in [("t5 t6", "t7"), ("t20 t21 t22", "t30 t31")]:
        enc = tok.encode(text, pair)
        cases.append({"kind": "encode", "tokenizer": "tiny-bert", "text": text,
                      "text_pair": pair, "add_special_tokens": True, "truncation": None,
                      "max_length": None, "padding": None, "input_ids": enc.ids,
                      "token_type_ids": enc.type_ids, "attention_mask": enc.attention_mask})
    return cases


def main():
    slow_class, basic_class = slow_bert_classes()
    toks = {name: slow_class(vocab_file=str(VOCAB), **kwargs) for name, kwargs in TOKENIZERS.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_char_vocab(basic_class, HARD_STRINGS + VARIANT_STRINGS)
    for name in ["uncased", "cased"]:
        toks["chars_" + name] = slow_class(vocab_file=str(CHAR_VOCAB), **TOKENIZERS[name])
    uncased = toks["uncased"]

    mrpc = read_tsv_column(DATA / "mrpc" / "train.tsv", [3, 4])[:150]
    mrpc_sentences = [s for row in mrpc for s in row]
    sst2_sentences = [row[0] for row in read_tsv_column(DATA / "sst2" / "train_alps_split.tsv", [0])[:300]]
    uncased_texts = HARD_STRINGS + mrpc_sentences + sst2_sentences

    cases = [tokenize_case("uncased", uncased, text) for text in uncased_texts]
    for name in ["cased", "uncased_keep_accents", "cased_strip_accents"]:
        cases += [tokenize_case(name, toks[name], text) for text in VARIANT_STRINGS]
    for name in ["chars_uncased", "chars_cased"]:
        cases += [tokenize_case(name, toks[name], text) for text in HARD_STRINGS + VARIANT_STRINGS]

    # Single and pair encodings: both truncation strategies, padding, no special tokens.
    synthetic_pairs = [("a b c d e", "f g h"), ("a b c", "d e f"), ("a b", "c d e f g h"),
                       ("a b c d e f g h", "x"), ("one two three four", "five six seven eight")]
    for text, pair in synthetic_pairs:
        for max_length in [5, 6, 7, 8, 9, 12]:
            cases.append(encode_case("uncased", uncased, text, pair, truncation="longest_first",
                                     max_length=max_length))
        for max_length in [6, 7, 8]:
            if len(uncased.tokenize(text)) + 3 <= max_length:  # only_second can always cut
                cases.append(encode_case("uncased", uncased, text, pair, truncation="only_second",
                                         max_length=max_length))
    for first, second in mrpc[:30]:
        cases.append(encode_case("uncased", uncased, first, second))
        for max_length in [16, 32, 48]:
            cases.append(encode_case("uncased", uncased, first, second, truncation="longest_first",
                                     max_length=max_length))
        first_len = len(uncased.tokenize(first))
        cases.append(encode_case("uncased", uncased, first, second, truncation="only_second",
                                 max_length=first_len + 3 + 5))
        cases.append(encode_case("uncased", uncased, first, second, truncation="longest_first",
                                 max_length=64, padding="max_length"))
    for text in mrpc_sentences[:10] + ["", "hello", "a b c d e f g h i j"]:
        cases.append(encode_case("uncased", uncased, text, truncation="longest_first", max_length=8))
        cases.append(encode_case("uncased", uncased, text, padding="max_length", max_length=80))
        cases.append(encode_case("uncased", uncased, text, add_special_tokens=False))
    cases.append(encode_case("uncased", uncased, "hello world", "second part",
                             add_special_tokens=False))
    cases.append(encode_case("uncased", uncased, "a b c d e", "f g h", add_special_tokens=False,
                             truncation="longest_first", max_length=5))
    cases.append(encode_case("cased", toks["cased"], "Hello World", "Café"))

    # Batches: padding to the longest row and to max_length, with and without pairs.
    cases.append(batch_case("uncased", uncased, [s for s, _ in mrpc[:8]]))
    cases.append(batch_case("uncased", uncased, ["short", "a bit longer text", ""]))
    cases.append(batch_case("uncased", uncased, [s for s, _ in mrpc[:6]], [t for _, t in mrpc[:6]],
                            truncation="longest_first", max_length=40))
    cases.append(batch_case("uncased", uncased, [s for s, _ in mrpc[8:12]],
                            [t for _, t in mrpc[8:12]], truncation="only_second", max_length=70,
                            padding="max_length"))
    cases.append(batch_case("uncased", uncased, sst2_sentences[:5], truncation="longest_first",
                            max_length=10, padding="max_length"))

    # Decoding: round trips of special, sub-word and punctuation-heavy encodings.
    for text in HARD_STRINGS[::7] + mrpc_sentences[:20] + ["it ' s", "hello , world !", "do n't"]:
        ids = uncased(text)["input_ids"]
        cases.append(decode_case("uncased", uncased, ids, skip_special_tokens=False))
        cases.append(decode_case("uncased", uncased, ids, skip_special_tokens=True))
    cases.append(decode_case("uncased", uncased, [], skip_special_tokens=False))
    cases.append(decode_case("uncased", uncased, [0, 0, 101, 103, 102, 0], skip_special_tokens=True))

    cases += tiny_bert_cases()

    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for case in cases:
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
    kinds = {}
    for case in cases:
        kinds[case["kind"]] = kinds.get(case["kind"], 0) + 1
    print(f"wrote {len(cases)} cases to {OUT} ({kinds}); transformers {transformers.__version__}, "
          f"Python unicodedata {unicodedata.unidata_version}")

    fast = fast_bert(VOCAB)
    disagree = [t for t in uncased_texts if fast.tokenize(t) != uncased.tokenize(t)]
    print(f"Rust-backed BertTokenizer disagrees with the slow one on {len(disagree)} of "
          f"{len(uncased_texts)} uncased strings: {[ascii(t) for t in disagree]}")


if __name__ == "__main__":
    main()
