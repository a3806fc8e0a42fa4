#!/usr/bin/env python3
"""Fails when modules of a crate import each other in a cycle.

Each source file is a module (`foo.rs` and `foo/mod.rs` alike). Module A depends on module B
when A names an item of B: a `use` declaration (re-exports included) or a path written in the
code (`crate::a::b::f()`, `super::X`, `child::f()`). A path is resolved to the longest prefix
that is a module file; an item defined inline in a `mod x { ... }` block belongs to the file.
A name a module re-exports
(`pub use`) counts as a dependency on the module that defines it. `mod child;` declarations
are not dependencies, and neither are test modules (`#[cfg(test)]`
blocks and files reached only through them): tests may reach anywhere.

Usage: check_module_cycles.py [--summary] [CRATE_SRC_DIR ...]   (default: crates/athena/src; the root
module is lib.rs, else main.rs)
`--summary` also prints which top-level modules each one uses. Prints every cycle (a strongly connected component of more than one module) with one edge
of each pair that closes it, and exits 1 if there is any.
"""

import os
import re
import sys

USE_RE = re.compile(r"\buse\s+([^;]+);", re.S)
PATH_RE = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
MOD_DECL_RE = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def strip_comments_and_strings(src):
    """Blanks out comments, string and char literals (keeping line structure)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 10]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|[^\\'])'", src[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:  # a lifetime
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def remove_test_blocks(src):
    """Drops items under `#[cfg(test)]` (a `mod tests { ... }`, a `mod tests;`, a fn)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", src):
        if m.start() < i:
            continue
        out.append(src[i:m.start()])
        j = m.end()
        # The item ends at the first `;` before any `{`, or at the matching `}`.
        k = j
        while k < len(src) and src[k] not in "{;":
            k += 1
        if k < len(src) and src[k] == "{":
            depth = 0
            while k < len(src):
                if src[k] == "{":
                    depth += 1
                elif src[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
        i = k + 1
    out.append(src[i:])
    return "".join(out)


def expand_use_tree(tree):
    """`a::{b, c::{d as e}}` -> [(a::b, b), (a::c::d, e)]: each path with the name it binds."""
    tree = re.sub(r"\s+as\s+", " as ", tree.strip())
    tree = re.sub(r"\s+(?!as )", "", tree)
    tree = tree.replace(" as", "@").replace(" ", "")
    if "{" not in tree:
        if not tree:
            return []
        path, _, alias = tree.partition("@")
        return [(path, alias or path.split("::")[-1])]
    k = tree.index("{")
    prefix, body = tree[:k], tree[k + 1:-1]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    result = []
    for p in parts:
        if not p:
            continue
        for sub, alias in expand_use_tree(p):
            if sub == "self":
                path = prefix.rstrip(":")
                result.append((path, alias if alias != "self" else path.split("::")[-1]))
            else:
                result.append((prefix + sub, alias))
    return result


def module_files(src_dir):
    """Maps module paths (tuples) to files, following `mod x;` from lib.rs, skipping tests."""
    modules = {}

    def visit(path, file, is_dir_owner):
        modules[path] = file
        text = read_module(file)
        base = os.path.dirname(file) if is_dir_owner else os.path.splitext(file)[0]
        for name in MOD_DECL_RE.findall(text):
            for cand, owner in ((os.path.join(base, name + ".rs"), False), (os.path.join(base, name, "mod.rs"), True)):
                if os.path.exists(cand):
                    visit(path + (name,), cand, owner)
                    break

    root = os.path.join(src_dir, "lib.rs")
    if not os.path.exists(root):
        root = os.path.join(src_dir, "main.rs")
    visit((), root, True)
    return modules


def resolve(path, here, modules, reexports=None, depth=0):
    """The module a path names from module `here`, or None (outside the crate). A name that a
    module re-exports (`pub use`) resolves to the module that defines it."""
    segs = path.split("::")
    if segs[0] == "crate":
        cur, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        cur, rest = here, segs
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                cur = cur[:-1]
            rest = rest[1:]
    elif here + (segs[0],) in modules:
        cur, rest = here, segs
    else:
        return None
    best, used = cur, 0
    for s in rest:
        if best + (s,) in modules:
            best, used = best + (s,), used + 1
        else:
            break
    if reexports is not None and depth < 16 and used < len(rest):
        item = rest[used]
        if item in reexports.get(best, {}):
            target = resolve(reexports[best][item], best, modules, reexports, depth + 1)
            if target is not None:
                return target
    return best


PUB_USE_RE = re.compile(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", re.S)


def read_module(file):
    return remove_test_blocks(strip_comments_and_strings(open(file, encoding="utf-8").read()))


def dependencies(modules):
    texts = {mod: read_module(file) for mod, file in modules.items()}
    reexports = {}
    for mod, text in texts.items():
        for m in PUB_USE_RE.finditer(text):
            for path, alias in expand_use_tree(m.group(1)):
                if not path.endswith("*"):
                    reexports.setdefault(mod, {})[alias] = path
    edges = {m: {} for m in modules}
    for mod, text in texts.items():
        paths = []
        for m in USE_RE.finditer(text):
            paths.extend(path for path, _ in expand_use_tree(m.group(1)))
        body = USE_RE.sub(" ", text)
        paths.extend(PATH_RE.findall(body))
        for p in paths:
            target = resolve(p.lstrip(":").rstrip(":*"), mod, modules, reexports)
            if target is None or target == mod:
                continue
            # A module naming its own descendant through itself, or an ancestor only as a
            # path prefix to a sibling, resolves to the deepest module file, as wanted.
            edges[mod].setdefault(target, p)
    return edges


def strongly_connected(edges):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in edges:
        if v not in index:
            strong(v)
    return [c for c in comps if len(c) > 1]


def name(mod):
    return "crate::" + "::".join(mod) if mod else "crate"


def print_summary(edges):
    """The dependencies between top-level modules (`--summary`)."""
    top = {}
    for a, targets in edges.items():
        for b in targets:
            if a[:1] != b[:1] and a and b:
                top.setdefault(a[0], set()).add(b[0])
    for a in sorted(top):
        print(f"  {a} -> {', '.join(sorted(top[a]))}")


def main():
    args = sys.argv[1:]
    summary = "--summary" in args
    dirs = [a for a in args if a != "--summary"] or ["crates/athena/src"]
    failed = False
    for src_dir in dirs:
        modules = module_files(src_dir)
        edges = dependencies(modules)
        cycles = strongly_connected(edges)
        n_edges = sum(len(e) for e in edges.values())
        if summary:
            print_summary(edges)
        if not cycles:
            print(f"{src_dir}: {len(modules)} modules, {n_edges} dependencies, no cycle")
            continue
        failed = True
        print(f"{src_dir}: {len(cycles)} import cycle(s) among {len(modules)} modules")
        for comp in cycles:
            members = set(comp)
            print("  cycle: " + ", ".join(sorted(name(m) for m in comp)))
            for a in sorted(comp):
                for b, via in sorted(edges[a].items()):
                    if b in members:
                        print(f"    {name(a)} -> {name(b)}  (`{via}`)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
