"""Model artifact integrity: SHA-256 checksums of a model's files and their verification before loading.

LightGBM's model parser aborts the whole process on a truncated file (a C++ fatal error: no
exception, no failure event), so a model folder is checked here, against the checksums recorded when
it was registered, before anything parses it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

LIGHTGBM_FILE = "model.lgb"  # MLflow's lightgbm flavour: the booster as LightGBM's text format
_LGB_END = b"end of parameters"  # last section of a LightGBM text model


class ModelArtifactError(RuntimeError):
    """A model artifact is missing, incomplete or differs from the checksums recorded at registration."""


def artifact_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 (hex) of every file under `folder`, keyed by its path relative to it (POSIX)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def verify_artifact(folder: Path, expected: dict[str, str] | None, label: str, where: str) -> None:
    """Raise ModelArtifactError (naming `label`, `where` and each file) unless `folder` matches `expected`.

    `expected` None (a model registered before checksums were recorded): the LightGBM file must at
    least exist and end with its last section, which a truncated file lacks.
    """
    if expected is None:
        model_file = folder / LIGHTGBM_FILE
        if not model_file.is_file():
            raise ModelArtifactError(
                f"{label}: model file {LIGHTGBM_FILE} is missing from its artifact at {where}"
            )
        size = model_file.stat().st_size
        with model_file.open("rb") as f:
            f.seek(max(0, size - 4096))
            if _LGB_END not in f.read():
                raise ModelArtifactError(
                    f"{label}: model file {LIGHTGBM_FILE} at {where} is incomplete (truncated: no "
                    f"'{_LGB_END.decode()}' section; {size} bytes)"
                )
        return
    found = artifact_checksums(folder) if folder.is_dir() else {}
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing file(s) {missing}")
    for name in sorted(k for k in expected if k in found and found[k] != expected[k]):
        problems.append(
            f"{name} is corrupt (SHA-256 {found[name][:12]}…, {(folder / name).stat().st_size} bytes; "
            f"registered {expected[name][:12]}…)"
        )
    if problems:
        raise ModelArtifactError(f"{label}: model artifact at {where}: " + "; ".join(problems))
