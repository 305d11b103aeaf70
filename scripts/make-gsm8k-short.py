#!/usr/bin/env python3
"""Writes data/gsm8k/short/{train,validation,test}.jsonl.gz: the GSM8K problems whose question and answer together
are at most 360 characters, so that a byte-level model with max_len 384 sees every answer whole (plain prompt:
BOS, question, newline, answer, EOS). Validation is the last 200 short problems of GSM8K's train file, train the
rest of them; test is the first 300 short problems of GSM8K's test file. Deterministic (gzip mtime 0).

Run from the repository root: python3 scripts/make-gsm8k-short.py
"""
import gzip
import json
import os

MAX_CHARS = 360
N_VALIDATION = 200
N_TEST = 300


def short(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if len(r["question"]) + len(r["answer"]) <= MAX_CHARS]


def write(path, rows):
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for r in rows:
            f.write((json.dumps({"question": r["question"], "answer": r["answer"]}, ensure_ascii=False) + "\n").encode())


train = short("data/gsm8k/train.jsonl.gz")
test = short("data/gsm8k/test.jsonl.gz")
os.makedirs("data/gsm8k/short", exist_ok=True)
write("data/gsm8k/short/train.jsonl.gz", train[:-N_VALIDATION])
write("data/gsm8k/short/validation.jsonl.gz", train[-N_VALIDATION:])
write("data/gsm8k/short/test.jsonl.gz", test[:N_TEST])
print(f"train {len(train) - N_VALIDATION}, validation {N_VALIDATION}, test {min(N_TEST, len(test))}")
