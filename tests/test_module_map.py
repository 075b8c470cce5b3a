"""Declarations that tell the truth: every Swift target imports exactly the dependencies Package.swift
declares for it, and the README's module map lists exactly those, one row per target."""

import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules of the system and the toolchain, not declared in Package.swift.
SYSTEM = {"Foundation", "Dispatch", "Glibc", "Darwin", "Testing"}
TARGET_KINDS = ("target", "executableTarget", "testTarget", "systemLibrary")


def read(*path):
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def package_targets():
    """{target name: (kind, set of declared dependencies)} from Package.swift."""
    text = read("Package.swift")
    starts = [(m.start(), m.group(1), m.group(2))
              for m in re.finditer(r'\.(%s)\(\s*name:\s*"([^"]+)"' % "|".join(TARGET_KINDS), text)]
    targets = {}
    for i, (start, kind, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        body = text[start:end]
        deps = set()
        m = re.search(r"dependencies:\s*\[", body)
        if m:
            depth, j = 1, m.end()
            while depth:
                depth += {"[": 1, "]": -1}.get(body[j], 0)
                j += 1
            block = re.sub(r'package:\s*"[^"]*"', "", body[m.end():j - 1])
            deps = set(re.findall(r'"([^"]+)"', block))
        targets[name] = (kind, deps)
    return targets


def swift_imports(name):
    """Modules the Swift files of target `name` import (None for a target without Swift files)."""
    for top in ("Sources", "Tests"):
        folder = os.path.join(ROOT, top, name)
        if not os.path.isdir(folder):
            continue
        found, swift = set(), False
        for base, _, files in os.walk(folder):
            for f in files:
                if f.endswith(".swift"):
                    swift = True
                    for line in read(base, f).splitlines():
                        m = re.match(r"\s*(?:@testable\s+|@_implementationOnly\s+)?import\s+(\w+)", line)
                        if m:
                            found.add(m.group(1))
        return found - SYSTEM if swift else None
    return None


def module_map():
    """{target name: set of modules it may import} from the README's module map table."""
    text = read("README.md")
    section = text.split("## Module map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        imports = cells[2].split(";") if len(names) > 1 and ";" in cells[2] else [cells[2]] * len(names)
        for name, allowed in zip(names, imports):
            allowed = allowed.strip()
            rows[name] = set() if allowed == "—" else {x.strip() for x in re.split(r",| and ", allowed) if x.strip()}
    return rows


class ModuleMapTests(unittest.TestCase):
    def test_every_target_imports_exactly_what_it_declares(self):
        for name, (kind, declared) in package_targets().items():
            imported = swift_imports(name)
            if imported is None:
                continue  # C and system-library targets
            with self.subTest(target=name):
                self.assertEqual(imported, declared,
                                 f"{name}: imports {sorted(imported)}, Package.swift declares {sorted(declared)}")

    def test_readme_module_map_matches_package_swift(self):
        targets, rows = package_targets(), module_map()
        self.assertEqual(set(rows), set(targets), "the module map lists other targets than Package.swift")
        for name, (_, declared) in targets.items():
            with self.subTest(target=name):
                self.assertEqual(rows[name], declared, f"{name}: README says {sorted(rows[name])}")

    def test_the_checks_can_fail(self):
        # A map parsed from the README must contain a known arrow, and a known wrong one must not hold.
        self.assertIn("Kernels", module_map()["Model"])
        self.assertNotIn("Kernels", package_targets()["Engine"][1])


if __name__ == "__main__":
    unittest.main()
