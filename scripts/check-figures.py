#!/usr/bin/env python3
"""Checks that every measured figure in the README and docs has a source.

A figure is a number with a decimal point in README.md or docs/*.md
(outside fenced code blocks; both ends of a range such as 0.32-0.43;
with or without a unit such as 3.1x). It has a source when it appears in
the figures table of docs/results.md (its table rows, not its prose) or
in a file under bench/results/ (superseded runs are kept in
bench/results/superseded/); a figure written with fewer decimals than its
source counts when the source rounds to it.

What it does not check: integers; and whether a figure comes from the
file its sentence cites. All results files form one pool of about a
thousand numbers, so a short figure (two decimals) nearly always matches
something: the check catches figures with no file at all, typically
longer ones, not a wrong figure that happens to exist elsewhere. Numbers
that are not measurements (versions, sample log lines, quoted papers)
are listed with their reason in scripts/figures-allowed.txt.

    scripts/check-figures.py        exit 1 and list each unsourced figure

`./dev test` runs it, so a figure cannot enter the docs without a source.
"""

import glob
import os
import re
import sys
from decimal import ROUND_HALF_UP, Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"(?<![\w.\-/])\d+\.\d+(?!\d|\.\d)")
RANGE = re.compile(r"(\d)-(\d)")


def numbers(text):
    """The decimal numbers of `text`, both ends of ranges included."""
    return NUMBER.findall(RANGE.sub(r"\1 - \2", text))


def read(path):
    with open(os.path.join(ROOT, path), errors="replace") as f:
        return f.read()


def documents():
    return ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def sources():
    """All numbers a figure may come from: the rows of the figures table
    and the results files."""
    table = [line for line in read("docs/results.md").splitlines() if line.startswith("|")]
    files = [os.path.relpath(p, ROOT) for p in glob.glob(
        os.path.join(ROOT, "bench", "results", "**", "*"), recursive=True) if os.path.isfile(p)]
    return set(numbers("\n".join(table + [read(f) for f in files])))


def allowed():
    """(file, number) pairs that are not measurements."""
    pairs = set()
    for line in read("scripts/figures-allowed.txt").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            path, number = line.split()[:2]
            pairs.add((path, number))
    return pairs


def sourced(number, known):
    """`number` is in `known`, equal to one (2.820 and 2.82), or one
    rounded to its decimals (8.556 written 8.56)."""
    if number in known:
        return True
    value, places = Decimal(number), len(number.split(".")[1])
    step = Decimal(1).scaleb(-places)
    return any(Decimal(k) == value
               or (len(k.split(".")[1]) > places and Decimal(k).quantize(step, ROUND_HALF_UP) == value)
               for k in known)


def main():
    docs = documents()
    known, ok = sources(), allowed()
    missing = []
    for doc in docs:
        in_code = False
        for n, line in enumerate(read(doc).splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            for number in numbers(line):
                if (doc, number) not in ok and not sourced(number, known):
                    missing.append(f"{doc}:{n}: {number}  | {line.strip()[:100]}")
    if missing:
        print("figures with no source (add them to docs/results.md with their results file, cite the file, or,"
              " for a number that is not a measurement, to scripts/figures-allowed.txt):")
        print("\n".join(missing))
        sys.exit(1)
    print(f"check-figures: every figure in {len(docs)} documents has a source")


if __name__ == "__main__":
    main()
