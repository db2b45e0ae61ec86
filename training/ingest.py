"""Import one conversation-log file into a dataset: importer stream -> new dataset version, atomically.

The importers (training.importers) are pure and streaming; this is the thin IO layer that writes
what they accept into the store inside one transaction and returns the report users see.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sqlite_utils import Database

from store.datasets import NewConversation, create_version, record_import, validate_dataset_name
from store.db import write_transaction
from store.redaction import RedactionSettings
from training.importers import Conversation, ImportOptions, ImportWarning, Reject, open_import

# How often (in records) the progress callback is called during a long import.
PROGRESS_EVERY = 1000


@dataclass
class ImportReport:
    """What an import did; `to_json()` is the machine-readable answer of `tuneloop import --json`."""

    source: str
    dataset: str
    format: str = ""
    format_reason: str = ""
    encoding: str = ""
    imported: int = 0
    already_in_dataset: int = 0
    duplicates: int = 0
    rejected: int = 0
    version: str | None = None
    version_id: int | None = None
    rejects: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    redaction: dict = field(default_factory=dict)
    """RedactionReport.to_json(): enabled, counts per type, locations per type ("line 14, message 2"); no values."""

    def to_json(self) -> dict:
        return asdict(self)


class NothingToImport(ValueError):
    """The file held no acceptable conversation: no version was written."""

    def __init__(self, report: ImportReport):
        self.report = report
        super().__init__(
            f"{report.source}: no new conversation to import ({report.rejected} rejected, "
            f"{report.duplicates} duplicates in the file, {report.already_in_dataset} already in "
            f"dataset {report.dataset!r}); nothing was written"
        )


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_file(
    db: Database,
    path: Path,
    dataset: str,
    options: ImportOptions | None = None,
    *,
    on_progress: Callable[[int], None] | None = None,
    redaction: RedactionSettings | None = None,
) -> ImportReport:
    """Import `path` into `dataset` as a new version. Raises ImportFileError when the file cannot be
    read at all and NothingToImport when no record was acceptable; in both cases nothing is written.

    Personal data is redacted before anything is written: `redaction` None means every type
    (RedactionSettings()); RedactionSettings.off() imports as is, and the version records that choice."""
    dataset = validate_dataset_name(dataset)
    options = options or ImportOptions()
    settings = redaction if redaction is not None else RedactionSettings()
    stream = open_import(path, options, redaction=settings)
    report = ImportReport(source=path.name, dataset=dataset, format=stream.format,
                          format_reason=stream.format_reason, encoding=stream.encoding)
    seen = 0

    def accepted():
        nonlocal seen
        for item in stream:
            seen += 1
            if on_progress and seen % PROGRESS_EVERY == 0:
                on_progress(seen)
            if isinstance(item, Conversation):
                report.imported += 1
                yield NewConversation(
                    content_hash=item.content_hash, messages=item.messages, source=path.name,
                    source_format=stream.format, external_id=item.external_id,
                    meta={**item.meta, "location": item.location},
                )
            elif isinstance(item, Reject):
                report.rejected += 1
                report.rejects.append({"location": item.location, "reason": item.reason})
            elif isinstance(item, ImportWarning):
                report.warnings.append({"location": item.location, "message": item.message})

    source = {"file": path.name, "sha256": file_sha256(path), "format": stream.format}
    try:
        with write_transaction(db):
            version, added, present = create_version(db, dataset, accepted(), kind="import", sources=[source],
                                                     redaction=settings.to_record())
            report.duplicates = stream.duplicates
            report.redaction = stream.redaction_report.to_json()
            report.already_in_dataset = present
            report.imported = added
            if added == 0:
                raise NothingToImport(report)
            report.version, report.version_id = str(version), version.id
            record_import(db, version, report.to_json())
    except NothingToImport:
        report.duplicates = stream.duplicates
        report.redaction = stream.redaction_report.to_json()
        raise
    return report
