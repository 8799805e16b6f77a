"""What a pass reports: its findings, each with its place, and what it did to the outputs."""

from __future__ import annotations

import dataclasses

from controller.core import findings


@dataclasses.dataclass(frozen=True)
class Located:
    """A finding with its place: a file and line, or a directory for findings about the whole set."""

    file: str
    line: int | None
    finding: findings.Finding

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        f = self.finding
        subject = f"{f.ref}: " if f.ref else ""
        return f"{self.location}: {f.severity.value}: {subject}{f.message}"

    def as_dict(self) -> dict[str, object]:
        f = self.finding
        return {
            "file": self.file,
            "line": self.line,
            "severity": f.severity.value,
            "reason": f.reason.value,
            "object": str(f.ref) if f.ref else None,
            "message": f.message,
        }


@dataclasses.dataclass
class PassReport:
    findings: list[Located] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)  # namespaces rewritten
    unchanged: int = 0
    kept: list[str] = dataclasses.field(default_factory=list)  # last good output kept
    removed: list[str] = dataclasses.field(default_factory=list)
    files_read: int = 0
    seconds: float = 0.0
    accounts: int = 0  # accounts with effective settings (rendered or not)
    replayed: bool = False  # answered from the last complete pass's snapshot

    @property
    def errors(self) -> list[Located]:
        return [item for item in self.findings if item.finding.is_error]

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0
