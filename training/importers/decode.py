"""Bytes -> text for the importers: encoding detection, streaming decode, and the text stream parsers read.

Encoding rule: a BOM decides (UTF-8/16/32); else the first SAMPLE_BYTES that decode as UTF-8 mean
UTF-8; else charset-normalizer picks from that sample (Windows-1252 winning near-ties among Latin
code pages, see _LATIN). When the sample was plain ASCII and a later byte is not UTF-8, the rest is
detected again from there: every ASCII-compatible encoding reads the ASCII prefix the same way, so
nothing already read changes. A byte that no chosen encoding can read raises ImportFileError with
its byte offset and line. Not text at all (known magic numbers, NUL bytes that are not UTF-16/32,
many control characters) is an ImportFileError before any parsing. Memory stays at a few chunks
whatever the file size.
Tested in tests/test_importers_robustness.py.
"""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

import charset_normalizer

from training.importers.model import ImportFileError

SAMPLE_BYTES = 256 * 1024
CHUNK_BYTES = 256 * 1024

# Files people upload by mistake, recognised by their first bytes, with what to do instead.
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx or .docx file?): unzip it, or export the sheet as CSV"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first"),
    (b"%PDF", "a PDF document: export the conversations as CSV, JSON or plain text instead"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.xls/.doc): save it as CSV (UTF-8) instead"),
    (b"SQLite format 3\x00", "an SQLite database: export the conversations as CSV or JSON instead"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in text people write (tab, newlines and form feed excluded).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# charset-normalizer cannot tell the Latin-script single-byte code pages apart on short or mostly
# ASCII samples (it may read "crème" as cp1257 "črème"). Among those, Windows-1252 is by far the
# likeliest for a helpdesk export that is not UTF-8 (Excel on Windows), so it wins near-ties. The
# price: a short Polish or Czech cp1250 file may be read as cp1252; the report names the encoding.
_LATIN = {"cp1250", "cp1252", "cp1254", "cp1257", "latin_1", "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_9",
          "iso8859_10", "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "mac_latin2", "mac_roman",
          "mac_iceland", "mac_turkish", "cp775", "cp850", "cp852", "cp858", "cp437", "hp_roman8"}
_TIE = 0.1

TextSource = Union[str, Iterable[str], IO[str], "TextStream"]


class TextStream:
    """Decoded text pulled in chunks, with newlines already translated to "\\n".

    Parsers read it by lines (iteration, readline), by size (read) or look ahead without consuming (peek)."""

    def __init__(self, chunks: Iterable[str]):
        self._chunks = iter(chunks)
        self._buf = ""
        self._pos = 0

    def _fill(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf = self._buf[self._pos:] + chunk
                self._pos = 0
                return True
        return False

    def peek(self, n: int) -> str:
        while len(self._buf) - self._pos < n and self._fill():
            pass
        return self._buf[self._pos:self._pos + n]

    def read(self, n: int = -1) -> str:
        if n < 0:
            rest = [self._buf[self._pos:], *self._chunks]
            self._buf, self._pos = "", 0
            return "".join(rest)
        out = self.peek(n)
        self._pos += len(out)
        return out

    def readline(self) -> str:
        parts = []  # a list, so a very long line costs linear time
        while True:
            i = self._buf.find("\n", self._pos)
            if i >= 0:
                parts.append(self._buf[self._pos:i + 1])
                self._pos = i + 1
                return "".join(parts)
            parts.append(self._buf[self._pos:])
            self._buf, self._pos = "", 0
            if not self._fill():
                return "".join(parts)

    def __iter__(self) -> Iterator[str]:
        while line := self.readline():
            yield line


def _translated(chunks: Iterable[str]) -> Iterator[str]:
    """\\r\\n and lone \\r -> \\n, also across chunk boundaries; a leading BOM dropped."""
    nl = io.IncrementalNewlineDecoder(None, translate=True)
    first = True
    for chunk in chunks:
        if first and chunk:
            chunk, first = chunk.removeprefix("\ufeff"), False
        yield nl.decode(chunk)
    yield nl.decode("", final=True)


def as_stream(source: TextSource) -> TextStream:
    """Whatever text a caller has (a string, lines, a text file) -> a TextStream."""
    if isinstance(source, TextStream):
        return source
    if isinstance(source, str):
        return TextStream(_translated([source]))
    if hasattr(source, "read"):
        return TextStream(_translated(iter(lambda: source.read(CHUNK_BYTES), "")))
    return TextStream(_translated(source))


def _magic(head: bytes) -> str | None:
    for prefix, what in _MAGIC:
        if head.startswith(prefix):
            return what
    return None


def _position(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"byte 0x{data[offset]:02x} at offset {offset} (line {line})"


def _normalizer_guess(data: bytes) -> str | None:
    """charset-normalizer's pick for these bytes (Windows-1252 winning Latin near-ties); None if none fits."""
    results = list(charset_normalizer.from_bytes(data))
    if not results:
        return None
    best = results[0]
    if best.encoding in _LATIN:
        cp1252 = next((r for r in results if r.encoding == "cp1252"), None)
        if cp1252 is not None and cp1252.chaos <= best.chaos + _TIE:
            return "cp1252"
    return codecs.lookup(best.encoding).name  # Python's spelling: "utf-16-le", not "utf_16_le"


def sniff_encoding(head: bytes, at_eof: bool) -> str:
    """The encoding of a file from its first bytes (all of it when at_eof); ImportFileError if not text."""
    if not head:
        raise ImportFileError("the file is empty")
    what = _magic(head)
    if what:
        raise ImportFileError(f"this is not a text file: it looks like {what}")
    encoding = next((enc for bom, enc in _BOMS if head.startswith(bom)), None)
    if encoding is None and b"\x00" in head:
        # NUL bytes: UTF-16/32 without a BOM, or binary.
        guess = _normalizer_guess(head)
        if guess and guess.startswith(("utf-16", "utf-32")):
            encoding = guess
        else:
            where = _position(head, head.index(b"\x00"))
            raise ImportFileError(f"this looks like a binary file, not text: {where} is a NUL; "
                                  "export the conversations as JSON, CSV or plain text")
    if encoding is None:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=at_eof)
            encoding = "utf-8"
        except UnicodeDecodeError as exc:
            encoding = _normalizer_guess(head)
            if encoding is None:
                raise ImportFileError(
                    f"cannot decode the file: {_position(head, exc.start)} is not valid UTF-8 and no other "
                    "encoding fits; save it as UTF-8 (in Excel: 'CSV UTF-8') and try again") from None
    text = head.decode(encoding, errors="replace")
    controls = len(_CONTROL.findall(text, 0, 65536))
    if controls > max(8, min(len(text), 65536) // 200):
        raise ImportFileError(f"this looks like a binary file, not text ({controls} control characters in its "
                              f"first {min(len(text), 65536)} characters, read as {encoding}); "
                              "export the conversations as JSON, CSV or plain text")
    return encoding


class DecodedFile:
    """A file opened for streaming decode. Use as a context manager; read `.stream`.

    `.encoding` may change once, from utf-8 to a detected one, when an ASCII start gives way to
    non-UTF-8 bytes (see the module docstring); `.bytes_read` tells how far the file has been read."""

    def __init__(self, path: Path, encoding: str):
        self.path = Path(path)
        self.encoding = encoding
        self.bytes_read = 0
        self._file = self.path.open("rb")
        self.stream = TextStream(self._chunks())

    def __enter__(self) -> "DecodedFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def _new_decoder(self) -> io.IncrementalNewlineDecoder:
        return io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(self.encoding)("strict"), translate=True)

    def _chunks(self) -> Iterator[str]:
        dec = self._new_decoder()
        all_ascii = True  # everything before this chunk was ASCII
        lines = 1  # line number at the start of this chunk, for error messages
        while chunk := self._file.read(CHUNK_BYTES):
            start = self.bytes_read
            self.bytes_read += len(chunk)
            try:
                text = dec.decode(chunk)
            except UnicodeDecodeError as exc:
                text, dec = self._recover(chunk, start, exc, all_ascii, dec, lines)
            all_ascii = all_ascii and chunk.isascii()
            lines += text.count("\n")
            yield text
        try:
            yield dec.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ImportFileError(f"the file ends in the middle of a character (read as {self.encoding}): "
                                  "it is truncated or not in that encoding") from None

    def _recover(self, chunk: bytes, start: int, exc: UnicodeDecodeError, all_ascii: bool,
                 dec: io.IncrementalNewlineDecoder, lines: int) -> tuple[str, io.IncrementalNewlineDecoder]:
        """A byte the current encoding cannot read: switch encoding if only ASCII came before, else fail."""
        # exc.object may include bytes the decoder kept from the previous chunk; map back into this chunk.
        at = max(0, exc.start - (len(exc.object) - len(chunk)))
        line = lines + chunk[:at].decode(self.encoding, errors="replace").count("\n")
        where = f"byte 0x{chunk[at]:02x} at offset {start + at} (line {line})" if at < len(chunk) else \
            f"offset {start + at} (line {line})"
        if self.encoding == "utf-8" and all_ascii and chunk[:at].isascii():
            window = chunk[max(0, at - 4096):] + self._file.read(SAMPLE_BYTES)
            self._file.seek(start + len(chunk))
            guess = _normalizer_guess(window)
            if guess:
                pending_cr = dec.getstate()[1] & 1  # the last chunk ended in "\r": a newline either way
                self.encoding = guess
                dec = self._new_decoder()
                try:
                    text = dec.decode(chunk)
                    return ("\n" + text if pending_cr and not text.startswith("\n") else text), dec
                except UnicodeDecodeError:
                    pass
        raise ImportFileError(f"cannot decode {where} as {self.encoding}: the file mixes encodings or is damaged; "
                              "save it again as UTF-8 and retry") from None


def read_head(path: Path) -> tuple[bytes, bool]:
    """The first SAMPLE_BYTES of a file and whether that is all of it."""
    with Path(path).open("rb") as f:
        head = f.read(SAMPLE_BYTES)
        return head, not f.read(1)
