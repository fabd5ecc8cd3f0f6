#!/usr/bin/env python3
# make_minilm_reference.py: what transformers and sentence-transformers compute with the real
# all-MiniLM-L6-v2 weights on 64 varied sentences, for tests/models/test_minilm.cc. What it is
# not: a test, nor needed by CI (the reference file is committed; the weights are not, the
# C++ test skips without them).
#
# Rerun from the repository root:
#     python3 tests/golden/make_minilm_reference.py "$(scripts/fetch_minilm.sh)"
#
# Writes tests/golden/minilm/reference.safetensors:
#   input_ids, attention_mask, token_type_ids  (N, T) int64, as the HF tokenizer produced
#       them for the whole batch (padded to the longest sentence), so the C++ test does not
#       depend on accel's tokenizer
#   last_hidden_state  (number of real tokens, 384) float32: AutoModel's last hidden state
#       at the positions where attention_mask is 1, sentence after sentence (padding
#       positions are left out to keep the file small; nothing reads them)
#   embeddings         (N, 384) float32: SentenceTransformer.encode (mean pooling over real
#       tokens, then L2 normalization)
# The script checks that sentence-transformers tokenizes the same way and that its embeddings
# equal mean pooling + normalize of AutoModel's output, so the two references agree.

import json
import os
import struct
import sys

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

OUT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm", "reference.safetensors")

# Short and long, questions, pairs of paraphrases, numbers, punctuation, accents, CJK, emoji,
# code, a lone word: everything a sentence-embedding user sends.
SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The cat sits outside.",
    "The new movie is awesome!",
    "The new movie is so great.",
    "A woman is slicing an onion.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "How do I reset my password?",
    "I forgot my login credentials and cannot sign in.",
    "The quick brown fox jumps over the lazy dog.",
    "hello",
    "Hi!",
    "?",
    "Deep learning models require large amounts of data.",
    "Neural networks are trained with gradient descent.",
    "The stock market fell 3.2% on Tuesday after the announcement.",
    "In 1969, Apollo 11 landed on the Moon.",
    "Call me at 555-0123 before 9:30 a.m.",
    "Café, naïve, résumé and façade all carry accents.",
    "Müller wohnt in München und trinkt gern Kaffee.",
    "El perro corre rápidamente por el parque.",
    "東京は日本の首都です。",
    "北京欢迎你",
    "I love pizza 🍕 and ice cream 🍦!",
    "def add(a, b): return a + b",
    "SELECT name FROM users WHERE id = 42;",
    "https://example.com/path?query=1&lang=en",
    "e-mail me: someone@example.org",
    "It's raining cats and dogs.",
    "The weather is lovely today.",
    "It is sunny and warm outside.",
    "He didn't say anything, did he?",
    "A child is riding a bicycle down the street.",
    "A boy rides his bike on the road.",
    "Two dogs are running through a snowy field.",
    "Photosynthesis converts light energy into chemical energy.",
    "Plants use sunlight to make food from carbon dioxide and water.",
    "The Great Wall of China is visible from low Earth orbit, some claim.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "To be, or not to be: that is the question.",
    "Please turn off the lights when you leave the room.",
    "The meeting has been moved to Thursday afternoon.",
    "Our quarterly revenue exceeded expectations by a wide margin.",
    "The patient was prescribed 20 mg of the medication twice daily.",
    "She sells sea shells by the sea shore.",
    "UNBELIEVABLE!!! This is the BEST day EVER!!!",
    "lowercase words without any punctuation at all",
    "A very long sentence that keeps going and going, listing apples, oranges, pears, plums, "
    "grapes, cherries, peaches, and finally a single banana at the end.",
    "Machine translation has improved dramatically with transformers.",
    "The train to Boston departs from platform 9.",
    "Is this the real life? Is this just fantasy?",
    "Rain, rain, go away; come again another day.",
    "The committee approved the budget unanimously.",
    "A bird in the hand is worth two in the bush.",
    "Quantum computers exploit superposition and entanglement.",
    "He said: \"Don't worry -- everything's fine.\"",
    "(parentheses) [brackets] {braces} <angles>",
    "x = 3.14159; y = 2.71828",
    "Grüße aus Zürich!",
    "Ελληνικά γράμματα: αβγ",
    "Привет, как дела?",
    "The end.",
]

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata):
    """Writes safetensors deterministically (sorted header, data ordered by element size)."""
    names = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for k in names:
        t = tensors[k].detach().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[k] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                     "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_minilm_reference.py MODEL_DIR   (MODEL_DIR from scripts/fetch_minilm.sh)")
    model_dir = sys.argv[1]
    torch.set_num_threads(1)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (N, T, 384)
    mask = batch["attention_mask"].bool()

    st = SentenceTransformer(model_dir, device="cpu")
    for i, sentence in enumerate(SENTENCES):
        st_ids = st.preprocess([sentence])["input_ids"][0]
        assert torch.equal(st_ids, batch["input_ids"][i][mask[i]]), f"tokenization differs for {sentence!r}"
    embeddings = st.encode(SENTENCES, convert_to_tensor=True, batch_size=len(SENTENCES)).float()

    pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert (pooled - embeddings).abs().max() < 1e-5, "sentence-transformers disagrees with mean pooling"

    os.makedirs(os.path.dirname(OUT_PATH), exist_ok=True)
    tensors = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "token_type_ids": batch["token_type_ids"],
        "last_hidden_state": hidden[mask],  # (real tokens, 384)
        "embeddings": embeddings,
    }
    save_safetensors(OUT_PATH, tensors, {"torch": torch.__version__, "model": "sentence-transformers/all-MiniLM-L6-v2"})
    print(f"{OUT_PATH}: {len(SENTENCES)} sentences, {batch['input_ids'].shape[1]} tokens max, "
          f"{int(mask.sum())} real tokens, {os.path.getsize(OUT_PATH) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
