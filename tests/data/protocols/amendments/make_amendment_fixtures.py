"""Write the amendment-log fixtures of tests/test_protocol_amendments.py (run from this folder).

    python make_amendment_fixtures.py

Every file is derived from ../trial_sim.yaml (a small protocol for SIMULATED data): version 1.0
(archived), 1.1 (one amendment), 1.2 (two amendments) and broken variants. The SHA-256 values
written into the amendment logs are those of the archived files written here (hashlib, i.e.
`sha256sum`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
BASE = (HERE.parent / "trial_sim.yaml").read_text(encoding="utf-8")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def versioned(version: str, text: str = BASE) -> str:
    out = text.replace('  version: "1"\n', f'  version: "{version}"\n', 1)
    assert out != text or f'version: "{version}"' in text
    return out


def amendment(version: str, date: str, old: str, digest: str, file: str, change: str) -> str:
    return (
        f'  - version: "{version}"\n'
        f'    date: "{date}"\n'
        f"    changes:\n"
        f"      - {change}\n"
        f"    rationale: Fixture for the amendment-log tests (no real rationale).\n"
        f"    replaces:\n"
        f'      version: "{old}"\n'
        f"      sha256: {digest}\n"
        f"      file: {file}\n"
    )


def with_log(text: str, entries: list[str], *, key: str = "amendments") -> str:
    return text.replace("protocol:\n", f"{key}:\n" + "".join(entries) + "protocol:\n", 1)


def write(name: str, text: str) -> Path:
    path = HERE / name
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def main() -> None:
    (HERE / "archive").mkdir(exist_ok=True)
    v10 = write("archive/trial_v1.0.yaml", versioned("1.0"))
    a11 = amendment(
        "1.1", "2026-02-01", "1.0", sha(v10), "archive/trial_v1.0.yaml",
        "H1 effect of interest 5 -> 6 minutes.",
    )  # fmt: skip
    v11_text = with_log(
        versioned("1.1").replace("effect_of_interest: 5\n", "effect_of_interest: 6\n", 1), [a11]
    )
    v11 = write("archive/trial_v1.1.yaml", v11_text)
    a12 = amendment(
        "1.2", "2026-03-01", "1.1", sha(v11), "archive/trial_v1.1.yaml",
        "H2's claim reworded (awakenings decrease -> fewer awakenings).",
    )  # fmt: skip
    v12_text = (
        v11_text.replace('  version: "1.1"\n', '  version: "1.2"\n', 1)
        .replace("amendments:\n" + a11, "amendments:\n" + a11 + a12, 1)
        .replace("claim: awakenings decrease", "claim: fewer awakenings", 1)
    )
    write("trial_v1.2.yaml", v12_text)

    # the archived 1.0 edited after the amendment (one comment line added)
    write("archive/trial_v1.0_edited.yaml", v10.read_text(encoding="utf-8") + "# edited\n")
    write(
        "bad_tampered_archive.yaml",
        v11_text.replace("file: archive/trial_v1.0.yaml", "file: archive/trial_v1.0_edited.yaml"),
    )
    write(
        "bad_missing_file.yaml",
        v11_text.replace("file: archive/trial_v1.0.yaml", "file: archive/trial_v0.9.yaml"),
    )
    # newest first instead of oldest first
    write(
        "bad_version_order.yaml",
        v12_text.replace("amendments:\n" + a11 + a12, "amendments:\n" + a12 + a11, 1),
    )
    # an amendment whose version does not come after the one it replaces
    write(
        "bad_version_not_increasing.yaml",
        v11_text.replace('  - version: "1.1"\n', '  - version: "0.9"\n', 1).replace(
            '  version: "1.1"\n', '  version: "0.9"\n', 1
        ),
    )
    write("bad_unknown_key.yaml", v11_text.replace("    rationale:", "    reason:", 1))


if __name__ == "__main__":
    main()
