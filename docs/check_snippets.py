#!/usr/bin/env python3
"""Keeps the code in README.md and docs/*.md equal to the sources CI builds and runs.

Every ```cpp block in README.md and docs/*.md must sit right under a marker naming its source:

    <!-- snippet: examples/autograd_tour.cc hooks -->
    ```cpp
    ...
    ```

and its text must equal the region of that file between `// [snippet:hooks]` and the next
`// [end]`, with the region's common indentation removed (so code from inside main() reads
flush left). The file must be one of the programs examples/CMakeLists.txt builds.

Every ```cuda block (the kernel excerpts of docs/cuda.md) follows the same rule, except that
its marker names a file of the CUDA backend, which CI compiles wherever nvcc exists:

    <!-- snippet: backends/cuda/elementwise.cuh vectorized-loop -->
    ```cuda
    ...
    ```

(a .cu file must be one backends/cuda/CMakeLists.txt compiles; a .cuh or .h one is included).

    python3 docs/check_snippets.py          # check; exit 1 listing every mismatch
    python3 docs/check_snippets.py --fix    # rewrite the doc blocks from the sources
"""
import argparse
import difflib
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!--\s*snippet:\s*(\S+)\s+(\S+)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
REGION_START = re.compile(r"^\s*//\s*\[snippet:([\w.-]+)\]\s*$")
REGION_END = re.compile(r"^\s*//\s*\[end\]\s*$")
CUDA_BACKEND = ROOT / "backends" / "cuda"


def regions(path):
    """name -> dedented text of every `// [snippet:name]` ... `// [end]` region in path."""
    found, current, lines = {}, None, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        start = REGION_START.match(line)
        if start:
            if current is not None:
                raise ValueError(f"{path}:{number}: snippet {start.group(1)!r} starts inside {current!r}")
            current, lines = start.group(1), []
            if current in found:
                raise ValueError(f"{path}:{number}: snippet {current!r} defined twice")
        elif REGION_END.match(line):
            if current is None:
                raise ValueError(f"{path}:{number}: // [end] without a // [snippet:NAME] before it")
            found[current] = textwrap.dedent("\n".join(lines)).strip("\n")
            current = None
        elif current is not None:
            lines.append(line)
    if current is not None:
        raise ValueError(f"{path}: snippet {current!r} has no // [end]")
    return found


def code_blocks(text):
    """(marker match or None, fence line index, closing line index, language, body) per block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, language = fence.groups()
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$", lines[end]):
            end += 1
        previous = i - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = MARKER.match(lines[previous].strip()) if previous >= 0 else None
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        yield marker, i, end, language, body
        i = end + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite doc blocks from the example sources")
    args = parser.parse_args()

    built = (ROOT / "examples" / "CMakeLists.txt").read_text()
    cuda_built = (CUDA_BACKEND / "CMakeLists.txt").read_text()
    cache, problems, checked = {}, [], 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        lines = text.split("\n")
        replacements = []
        for marker, start, end, language, body in code_blocks(text):
            where = f"{doc.relative_to(ROOT)}:{start + 1}"
            is_kernel = language == "cuda"
            if language not in ("cpp", "c++", "cc") and not is_kernel and not marker:
                continue
            if not marker:
                expected_source = "backends/cuda/FILE.cu" if is_kernel else "examples/FILE.cc"
                problems.append(f"{where}: a ```{language} block without <!-- snippet: {expected_source} NAME -->")
                continue
            source_name, name = marker.groups()
            source = ROOT / source_name
            if not source.is_file():
                problems.append(f"{where}: {source_name} does not exist")
                continue
            if is_kernel:
                compiled = source.suffix != ".cu" or re.search(rf"^\s*{re.escape(source.name)}\s*$", cuda_built, re.M)
                if source.parent != CUDA_BACKEND or source.suffix not in (".cu", ".cuh", ".h") or not compiled:
                    problems.append(f"{where}: a ```cuda block quotes {source_name}, not a source that "
                                    "backends/cuda/CMakeLists.txt compiles")
                    continue
            elif source.parent != ROOT / "examples" or re.search(rf"\b{re.escape(source.stem)}\b", built) is None:
                problems.append(f"{where}: {source_name} is not a program examples/CMakeLists.txt builds")
                continue
            if source not in cache:
                try:
                    cache[source] = regions(source)
                except ValueError as error:
                    problems.append(str(error))
                    cache[source] = {}
            if name not in cache[source]:
                problems.append(f"{where}: {source_name} has no region // [snippet:{name}]")
                continue
            expected = cache[source][name]
            checked += 1
            if body.strip("\n") != expected:
                if args.fix:
                    replacements.append((start, end, expected))
                    continue
                diff = "\n".join(difflib.unified_diff(expected.split("\n"), body.strip("\n").split("\n"),
                                                      f"{source_name} [{name}]", where, lineterm="", n=1))
                problems.append(f"{where}: differs from {source_name} [{name}]:\n{diff}")
        if replacements:
            for start, end, expected in reversed(replacements):
                lines[start + 1:end] = expected.split("\n")
            doc.write_text("\n".join(lines))
            print(f"rewrote {len(replacements)} block(s) in {doc.relative_to(ROOT)}")

    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_snippets: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_snippets: {checked} snippet(s) match their sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
