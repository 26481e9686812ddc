"""Contract read tools and text helpers: load (Odoo attachment or file, text or PDF), chunk with
character offsets, and pattern extraction of dates, durations, governing law and party names.

Everything here is deterministic and model-free. Every extracted value keeps ``(start, end)`` offsets
into the contract text it was read from, so ``text[start:end]`` is always the quoted source.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from signoff.errors import DataError, OdooMissingError
from signoff.integrations.odoo import OdooReader

#: Bumped whenever chunking changes (cached embeddings and trained models carry it).
CHUNKER_VERSION = "c2"
MAX_CHUNK_CHARS = 900
MIN_CHUNK_CHARS = 25
#: Attachments larger than this are refused before ``datas`` is read (base64 over JSON-RPC).
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
#: A contract's text beyond this is refused before analysis (memory and time grow with it).
MAX_CONTRACT_CHARS = 1_000_000

ATTACHMENT_META = ["id", "name", "mimetype", "file_size", "res_model", "res_id", "checksum", "description"]


# --- loading -------------------------------------------------------------------------------------


@dataclass
class ContractSource:
    """A contract's text and where it came from."""

    text: str
    name: str
    sha256: str
    """sha256 of the original bytes (the PDF, or the text file)."""
    db: str = "file"
    attachment_id: int | None = None
    res_model: str | None = None
    res_id: int | None = None
    mimetype: str = "text/plain"

    @property
    def thread_id(self) -> str:
        if self.attachment_id is not None:
            return f"contract:{self.db}:{self.attachment_id}"
        return f"contract:file:{self.sha256[:16]}"


def pdf_text(data: bytes) -> str:
    """Text of a PDF (pypdf, layout-free extraction), pages separated by a blank line."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:  # pragma: no cover - pypdf is a dependency
        raise DataError("reading PDF contracts needs pypdf: pip install pypdf") from exc
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read the PDF: {exc}") from exc
    text = "\n\n".join(p.strip("\n") for p in pages).strip()
    if not text:
        raise DataError("the PDF has no extractable text (a scan? OCR it first)")
    return text


#: Other formats a contract arrives in, by magic number: named in the refusal.
_NOT_TEXT = {b"PK\x03\x04": "a ZIP archive (a .docx or .odt?)", b"\xd0\xcf\x11\xe0": "an old Office document (.doc?)",
             b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
             b"\x7fELF": "a program", b"\x1f\x8b": "a gzip archive"}


def decode_contract(data: bytes, *, mimetype: str | None = None, name: str = "") -> tuple[str, str]:
    """``(text, mimetype)`` of a contract's bytes: PDF by magic number or type, else UTF-8 text. Other
    formats, binary data, no text at all, or more than :data:`MAX_CONTRACT_CHARS`: DataError naming it."""
    label = name or "the contract"
    if data[:5] == b"%PDF-" or (mimetype or "").endswith("/pdf") or name.lower().endswith(".pdf"):
        text, kind = pdf_text(data), "application/pdf"
    else:
        for magic, what in _NOT_TEXT.items():
            if data.startswith(magic):
                raise DataError(f"{label} is {what}, not text or PDF: save it as PDF or plain text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
        kind = mimetype or "text/plain"
        controls = sum(1 for c in text[:100_000] if ord(c) < 32 and c not in "\n\r\t\f")
        if "\x00" in text[:100_000] or controls > 0.01 * min(len(text), 100_000):
            raise DataError(f"{label} is not a text file (binary data): contracts are read from text or PDF")
    if not text.strip():
        raise DataError(f"{label} has no text")
    if len(text) > MAX_CONTRACT_CHARS:
        raise DataError(f"{label} has {len(text):,} characters, over the {MAX_CONTRACT_CHARS:,} a contract may have "
                        "(the longest CUAD contract has 338,211): split it, or summarise the main agreement")
    return text, kind


def load_file(path: Path) -> ContractSource:
    """A contract from a ``.txt`` or ``.pdf`` file."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_ATTACHMENT_BYTES:
            raise DataError(f"{path} is {size:,} bytes, over {MAX_ATTACHMENT_BYTES:,}: not a contract to summarise")
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    text, mimetype = decode_contract(data, name=str(path))
    return ContractSource(text=text, name=Path(path).name, sha256=hashlib.sha256(data).hexdigest(),
                          mimetype=mimetype)


def load_attachment(reader: OdooReader, attachment_id: int, *, db: str) -> ContractSource:
    """A contract attached in Odoo: metadata first (type, size, owner record), then ``datas``."""
    try:
        rows = reader.read("ir.attachment", [attachment_id], ATTACHMENT_META)
    except OdooMissingError as exc:  # Odoo's "Record does not exist ... (Record: ir.attachment(N,), User: 3)"
        raise OdooMissingError(f"no attachment {attachment_id}", name=exc.name) from exc
    if not rows:
        raise DataError(f"no attachment {attachment_id}")
    meta = rows[0]
    size = int(meta.get("file_size") or 0)
    if size > MAX_ATTACHMENT_BYTES:
        raise DataError(f"ir.attachment({attachment_id}) is {size} bytes, over {MAX_ATTACHMENT_BYTES}")
    mimetype = str(meta.get("mimetype") or "")
    if mimetype and not (mimetype.startswith("text/") or mimetype.endswith("/pdf")
                         or mimetype == "application/octet-stream"):
        raise DataError(f"ir.attachment({attachment_id}) is {mimetype}: only text and PDF contracts are read")
    datas = reader.read("ir.attachment", [attachment_id], ["datas"])[0].get("datas")
    if not datas:
        raise DataError(f"ir.attachment({attachment_id}) has no content")
    raw = base64.b64decode(datas)
    text, mimetype = decode_contract(raw, mimetype=mimetype, name=str(meta.get("name") or ""))
    return ContractSource(
        text=text, name=str(meta.get("name") or f"attachment {attachment_id}"),
        sha256=hashlib.sha256(raw).hexdigest(), db=db, attachment_id=attachment_id,
        res_model=meta.get("res_model") or None, res_id=int(meta["res_id"]) if meta.get("res_id") else None,
        mimetype=mimetype,
    )


def list_contract_attachments(
    reader: OdooReader, *, res_model: str = "sale.order", limit: int = 50
) -> list[dict[str, Any]]:
    """Attachments on ``res_model`` records that look like contracts (text or PDF), metadata only."""
    domain: list[Any] = [["res_model", "=", res_model]]
    rows = reader.search_read("ir.attachment", domain, ATTACHMENT_META, limit=limit)
    return [r for r in rows if str(r.get("mimetype") or "").startswith("text/")
            or str(r.get("mimetype") or "").endswith("/pdf")]


# --- chunking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """A clause or sentence of the contract: ``text[start:end]`` (whitespace-trimmed)."""

    index: int
    start: int
    end: int
    text: str


# A sentence ends at ". " / "; " before a capital or a digit/bracket, or at a blank line, or before a
# numbered heading on a new line ("\n12.3 ", "\nSection 4", "\n(a)").
_BOUNDARY = re.compile(
    r"(?<=[.;:!?])[\"'”)]?\s+(?=[\"“(\[]?[A-Z0-9])"
    r"|\n\s*\n"
    r"|\n(?=\s*(?:\d+(?:\.\d+)*\.?\s|Section\s|SECTION\s|ARTICLE\s|Article\s|\([a-z0-9]{1,4}\)\s))"
)
_ABBREV = re.compile(r"(?:\b(?:Inc|Ltd|Co|Corp|No|Nos|Sec|Art|U\.S|e\.g|i\.e|etc|vs|Mr|Ms|Dr|St|Jr|Pty|"
                     r"S\.A|N\.V|B\.V|L\.P|L\.L\.C|P\.C|Ltda|GmbH|a\.m|p\.m|[A-Z])\.)$")


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut a span over ``MAX_CHUNK_CHARS`` at "; " / ", " / spaces, keeping offsets."""
    out: list[tuple[int, int]] = []
    s = start
    while end - s > MAX_CHUNK_CHARS:
        window = text[s : s + MAX_CHUNK_CHARS]
        cut = max(window.rfind("; "), window.rfind(": "))
        if cut < MAX_CHUNK_CHARS // 3:
            cut = window.rfind(", ")
        if cut < MAX_CHUNK_CHARS // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = MAX_CHUNK_CHARS - 1
        out.append((s, s + cut + 1))
        s = s + cut + 1
    out.append((s, end))
    return out


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def chunk_text(text: str) -> list[Chunk]:
    """Sentences / clauses with exact offsets: ``chunk.text == text[chunk.start:chunk.end]``.

    Pieces shorter than ``MIN_CHUNK_CHARS`` (headings, page numbers) are joined to the next piece;
    pieces longer than ``MAX_CHUNK_CHARS`` are cut at clause punctuation."""
    cuts = [0]
    for m in _BOUNDARY.finditer(text):
        if _ABBREV.search(text[max(0, m.start() - 8) : m.start()]):
            continue
        cuts.append(m.start())
    cuts.append(len(text))
    pieces: list[tuple[int, int]] = []
    pending: int | None = None
    for a, b in zip(cuts, cuts[1:], strict=False):
        a, b = _trim(text, a, b)
        if a >= b:
            continue
        if pending is not None:
            a = pending
            pending = None
        if b - a < MIN_CHUNK_CHARS:
            pending = a
            continue
        pieces.extend(_split_long(text, a, b))
    if pending is not None:
        if pieces and len(text[pending:].strip()) < MIN_CHUNK_CHARS:
            a, _ = pieces.pop()
            pieces.append((a, _trim(text, a, len(text))[1]))
        else:
            pieces.append(_trim(text, pending, len(text)))
    chunks: list[Chunk] = []
    for a, b in pieces:
        a, b = _trim(text, a, b)
        if a < b:
            chunks.append(Chunk(len(chunks), a, b, text[a:b]))
    return chunks


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- numbers, durations and dates ----------------------------------------------------------------

_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "a": 1, "an": 1,
}
_TENS = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)[- ](?:one|two|three|four|five|six|seven|eight|nine)"
_WORDS = "|".join(sorted((k for k in _SMALL if k not in ("a", "an")), key=len, reverse=True))
_NUM_WORD = rf"(?:{_TENS}|one hundred(?: and)?(?: \w+)?|{_WORDS})"
_UNIT = r"(?P<unit>business days?|calendar days?|days?|weeks?|months?|years?)"
_DURATION = re.compile(
    rf"(?i)\b(?:(?P<word>{_NUM_WORD})\s*\(\s*(?P<paren>\d{{1,4}})\s*\)|(?P<digits>\d{{1,4}})|(?P<only>{_NUM_WORD}|an?))"
    rf"[\s-]*(?:\(\s*\d{{1,4}}\s*\)\s*)?{_UNIT}\b"
)
_UNIT_DAYS = {"day": 1, "business day": 1, "calendar day": 1, "week": 7, "month": 30, "year": 365}


def word_number(text: str) -> int | None:
    """"ninety" -> 90, "twenty-one" -> 21, "one hundred twenty" -> 120; None if not a number word."""
    t = text.lower().replace("-", " ").replace(" and ", " ").split()
    if not t:
        return None
    total = 0
    for w in t:
        if w not in _SMALL:
            return None
        v = _SMALL[w]
        total = total * 100 if v == 100 and total else total + v
    return total


@dataclass(frozen=True)
class Duration:
    """A normalised duration: ``value`` ``unit`` (day, week, month, year) and its source span."""

    value: int
    unit: str
    start: int
    end: int

    @property
    def days(self) -> int:
        """Approximate length in days (a month = 30, a year = 365)."""
        return self.value * _UNIT_DAYS[self.unit]

    @property
    def label(self) -> str:
        return f"{self.value} {self.unit}{'' if self.value == 1 else 's'}"

    def before(self, day: date) -> date:
        """``day`` minus this duration, by calendar (months and years exact)."""
        if self.unit in ("month", "year"):
            months = self.value * (12 if self.unit == "year" else 1)
            return add_months(day, -months)
        return day - timedelta(days=self.days)

    def after(self, day: date) -> date:
        if self.unit in ("month", "year"):
            months = self.value * (12 if self.unit == "year" else 1)
            return add_months(day, months)
        return day + timedelta(days=self.days)


def add_months(day: date, months: int) -> date:
    import calendar

    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def find_durations(text: str, offset: int = 0) -> list[Duration]:
    """Every duration in ``text``: "ninety (90) days" -> 90 days, "one (1) year", "30 days", "a month"."""
    out = []
    for m in _DURATION.finditer(text):
        unit = m.group("unit").lower()
        unit = unit[:-1] if unit.endswith("s") else unit
        unit = {"business day": "day", "calendar day": "day"}.get(unit, unit)
        if m.group("paren"):
            value: int | None = int(m.group("paren"))
        elif m.group("digits"):
            value = int(m.group("digits"))
        else:
            value = word_number(m.group("only") or m.group("word") or "")
        if value is None or value <= 0:
            continue
        out.append(Duration(value, unit, offset + m.start(), offset + m.end()))
    return out


_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"], start=1)}
_MONTHS.update({k[:3]: v for k, v in list(_MONTHS.items())})
_MON = (r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
        r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_DATE = re.compile(
    rf"(?i)\b(?:"
    rf"{_MON}\s+(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y1>(?:19|20)\d{{2}})"
    rf"|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:day\s+of\s+)?{_MON.replace('mon', 'mon2')},?\s+(?P<y2>(?:19|20)\d{{2}})"
    rf"|(?P<m3>\d{{1,2}})/(?P<d3>\d{{1,2}})/(?P<y3>(?:19|20)?\d{{2}})"
    rf"|(?P<y4>(?:19|20)\d{{2}})-(?P<m4>\d{{2}})-(?P<d4>\d{{2}})"
    rf")\b"
)


@dataclass(frozen=True)
class FoundDate:
    value: date
    start: int
    end: int


def find_dates(text: str, offset: int = 0) -> list[FoundDate]:
    """Every calendar date: "October 1, 2019", "1st day of March, 2019", "10/1/19", "2019-10-01"."""
    out = []
    for m in _DATE.finditer(text):
        g = m.groupdict()
        try:
            if g["mon"]:
                value = date(int(g["y1"]), _MONTHS[g["mon"].lower()[:3]], int(g["d1"]))
            elif g["mon2"]:
                value = date(int(g["y2"]), _MONTHS[g["mon2"].lower()[:3]], int(g["d2"]))
            elif g["m3"]:
                y = int(g["y3"])
                value = date(y + 2000 if y < 100 else y, int(g["m3"]), int(g["d3"]))
            else:
                value = date(int(g["y4"]), int(g["m4"]), int(g["d4"]))
        except (ValueError, KeyError):
            continue
        out.append(FoundDate(value, offset + m.start(), offset + m.end()))
    return out


# --- governing law, parties ------------------------------------------------------------------------

_LAW = re.compile(
    r"(?:laws?|law)\s+of\s+(?:the\s+)?(?:State\s+of\s+|Commonwealth\s+of\s+|Province\s+of\s+|Republic\s+of\s+)?"
    r"(?P<place>(?:New\s|North\s|South\s|West\s|Rhode\s|Hong\s|United\s|British\s)?[A-Z][A-Za-z]+(?:\s(?:Kingdom|States|Columbia|Kong|Island|Carolina|Dakota|Virginia|Hampshire|Jersey|Mexico|York|Wales))?)"
)
_NOT_PLACES = {"The", "This", "Such", "Any", "Each", "Law", "Laws", "Agreement", "Its", "Which"}


def find_governing_law(text: str, offset: int = 0) -> tuple[str, int, int] | None:
    """The jurisdiction named in a governing-law clause: ("Delaware", start, end) or None."""
    for m in _LAW.finditer(text):
        place = m.group("place").strip()
        if place in _NOT_PLACES:
            continue
        return place, offset + m.start("place"), offset + m.end("place")
    return None


_ENTITY = re.compile(
    r"(?P<name>(?:[A-Z][\w&'.,-]*\s){0,6}?[A-Z][\w&'.-]*,?\s"
    r"(?:Inc\.?|Incorporated|Corporation|Corp\.?|Company|Co\.,?\s?Ltd\.?|Ltd\.?|Limited|LLC|L\.L\.C\.|LLP|L\.P\.|LP|PLC|plc|"
    r"GmbH|AG|S\.A\.|SA|N\.V\.|B\.V\.|Pte\.?,?\s?Ltd\.?|PTE,?\s?LTD\.?|Pty\.?\s?Ltd\.?|S\.r\.l\.|SE|AB|Oy|KK))(?![\w])"
)
_DEFINED = re.compile(r"\(\s*(?:hereinafter\s+(?:referred\s+to\s+as\s+)?|the\s+)?"
                      r"[\"“](?P<term>[A-Z][\w .&-]{1,40})[\"”]\s*\)")


def find_parties(text: str, offset: int = 0) -> list[tuple[str, int, int]]:
    """Company names ("Acme Software, Inc.") and their defined short names ('("Provider")')."""
    out: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for m in _ENTITY.finditer(text):
        name = m.group("name").strip()
        s = m.start("name")
        # drop leading connective words the pattern swallowed ("By and between Acme, Inc.")
        lead = re.match(r"(?:(?:By|And|Between|Among|This|The|Agreement|THIS|AGREEMENT|BETWEEN|AND|BY)\s+)+", name)
        if lead:
            s += lead.end()
            name = name[lead.end():]
        if name and name.lower() not in seen:
            seen.add(name.lower())
            out.append((name, offset + s, offset + s + len(name)))
    for m in _DEFINED.finditer(text):
        term = m.group("term").strip()
        if term.lower() in seen or term.lower() in {"agreement", "effective date", "term"}:
            continue
        seen.add(term.lower())
        out.append((term, offset + m.start("term"), offset + m.start("term") + len(term)))
    return out


# --- span candidates for the short-value categories (parties, dates) -------------------------------

_SUFFIX = (r"(?:Inc|INC|Incorporated|INCORPORATED|Corporation|CORPORATION|Corp|CORP|Company|COMPANY|Co|CO|Ltd|LTD|"
           r"Limited|LIMITED|LLC|L\.L\.C|LLP|L\.P|LP|PLC|plc|GmbH|GMBH|AG|S\.A\.S|SAS|S\.A|SA|N\.V|NV|B\.V|BV|"
           r"Pte|PTE|Pty|PTY|S\.r\.l|SRL|S\.p\.A|SpA|SE|AB|Oy|KK|Aktiengesellschaft|AKTIENGESELLSCHAFT|Trust|TRUST|"
           r"Fund|FUND|Partners|PARTNERS|Holdings|HOLDINGS|Group|GROUP|University|Bank|BANK)\.?")
_CAP = r"(?:[A-Z][\w&'’.\-]*|[a-z][A-Z][\w\-]*)"
_NAME_WORD = rf"(?:{_CAP}|\d[\w\-]*|of|de|du|la|del|der|und|&|and)"
_ENTITY_ANY = re.compile(rf"(?<![\w]){_CAP}(?:,?\s+{_NAME_WORD}){{0,7}}?,?\s+{_SUFFIX}"
                         r"(?:,?\s*(?:Inc|Ltd|LTD|INC|Co|Limited)\.?)?(?![\w])")
_LEAD = re.compile(r"(?:(?:By|and|And|Between|between|Among|among|This|The|THE|THIS|Agreement|AGREEMENT|BETWEEN|AND|"
                   r"BY|AMONG|with|WITH|RECITALS|Recitals|WHEREAS|Whereas|NOW|If|INC\.|Inc\.|LLC|Agreement,|To|From|"
                   r"Dear|Source:?|Agreed and Accepted:?|[IVX]{1,4}\.|\d{1,2}\.)\s+)+")
_CAP_LEAD = re.compile(r"(?:(?:RECITALS|Recitals|WHEREAS|Whereas|NOW|If|AND|BETWEEN|AMONG|BY|INC\.|Inc\.|LLC|"
                       r"Agreement,|To|From|Dear|Source:?|[IVX]{1,4}\.)\s+)+")
_QUOTED = re.compile(r"[\"“”ʺ]([A-Za-z0-9][^\"“”ʺ\n]{0,40}?)[\"“”ʺ]")
_CAPSEQ = re.compile(rf"(?<![\w\"“])((?:The[ \t]+|THE[ \t]+)?{_CAP}"
                     rf"(?:[ \t]+(?:(?:of|de|for|and|&)[ \t]+)?{_CAP}){{0,5}})")
_PAREN = re.compile(r"\([^()]{3,160}\)")
_PARTY_DEF = re.compile(r"[\"“ʺ]?Part(?:y|ies)[\"”ʺ]?")
_CAPSEQ_STOP = {"This", "THIS", "The", "THE", "Agreement", "AGREEMENT", "WHEREAS", "NOW", "THEREFORE", "In", "IN",
                "Section", "SECTION", "Article", "ARTICLE", "Date", "Effective", "By", "BY", "Name", "Title", "Its"}
#: The preamble and the signature area: where CUAD's party names and defined short names are.
PARTY_ZONE_CHARS = 5000


def party_candidates(text: str, chunks: list[Chunk] | None = None) -> list[tuple[str, int, int]]:
    """Candidate party spans ``(kind, start, end)`` in the preamble and the signature area: company
    names ("Acme Corp.", "SIEMENS AKTIENGESELLSCHAFT"), quoted defined terms ("Company"), capitalised
    name sequences, parentheticals with a defined term, and the sentence that defines "Party"/"Parties".
    Many are wrong: a ranker scores them (:class:`signoff.llm.clauses.SpanRanker`)."""
    zones = [(0, min(len(text), PARTY_ZONE_CHARS))]
    if len(text) > PARTY_ZONE_CHARS:
        zones.append((max(zones[0][1], len(text) - PARTY_ZONE_CHARS), len(text)))
    out: list[tuple[str, int, int]] = []
    for lo, hi in zones:
        seg = text[lo:hi]
        for m in _ENTITY_ANY.finditer(seg):
            s = m.start()
            lead = _LEAD.match(m.group(0))
            if lead:
                s += lead.end()
            if s < m.end():
                out.append(("entity", lo + s, lo + m.end()))
        for m in _QUOTED.finditer(seg):
            out.append(("quoted", lo + m.start(1), lo + m.end(1)))
        for m in _CAPSEQ.finditer(seg):
            s = m.start(1)
            lead = _CAP_LEAD.match(m.group(1))
            if lead:
                s += lead.end()
            if seg[s:m.end(1)] in _CAPSEQ_STOP or m.end(1) - s < 2:
                continue
            out.append(("capseq", lo + s, lo + m.end(1)))
        for m in _PAREN.finditer(seg):
            if re.search(r"[\"“ʺ]", m.group(0)):
                out.append(("paren", lo + m.start(), lo + m.end()))
    for ch in chunks or []:
        if ch.start > PARTY_ZONE_CHARS * 4 and ch.end < len(text) - PARTY_ZONE_CHARS:
            continue
        if _PARTY_DEF.search(ch.text) and re.search(r"[\"“ʺ]Part(?:y|ies)", ch.text):
            out.append(("partydef", ch.start, ch.end))
            for piece in re.finditer(r"[^;]+", ch.text):  # the clause of the sentence that defines it
                if re.search(r"[\"“ʺ]Part(?:y|ies)", piece.group(0)) and len(piece.group(0)) < len(ch.text) - 5:
                    a, b = _trim(text, ch.start + piece.start(), ch.start + piece.end())
                    out.append(("partydef", a, b))
    seen: set[tuple[int, int]] = set()
    uniq = []
    for kind, s, e in out:
        s, e = _trim(text, s, e)
        if e - s >= 2 and (s, e) not in seen:
            seen.add((s, e))
            uniq.append((kind, s, e))
    return uniq


_DAY_OF = re.compile(r"(?i)\b\d{1,2}\s*(?:st|nd|rd|th|t\s?h)?\s+day\s+of\s+[A-Za-z]{3,9}\.?,?(?:\s*(?:19|20)[\d_]{2})?")
_BLANK = r"(?:_{2,}|\[\s*[•●]?\s*\])"
_BLANK_DATE = re.compile(rf"(?i)(?:\bthis\s+)?{_BLANK}\s*(?:day\s+of\s+(?:{_BLANK}|[A-Za-z]{{3,9}}),?\s*)?"
                         r",?\s*(?:19|20)[\d_]{2}\b|\bday\s+of\s*,\s*(?:19|20)\d{2}")
_DASH_DATE = re.compile(r"\b\d{1,2}-\d{1,2}-(?:19|20)?\d{2}\b")


def date_candidates(text: str) -> list[tuple[str, int, int]]:
    """Candidate date spans ``(kind, start, end)``: every calendar date (:func:`find_dates`), "20th day of
    January, 2020" (also OCR-split "20t h"), blank dates of unsigned forms ("this ____ day of ____, 2000",
    "[•], 2020") and "3-14-18"."""
    out = [("date", d.start, d.end) for d in find_dates(text)]
    taken = [(s, e) for _k, s, e in out]
    for kind, rx in (("date", _DAY_OF), ("blankdate", _BLANK_DATE), ("date", _DASH_DATE)):
        for m in rx.finditer(text):
            s, e = _trim(text, m.start(), m.end())
            if any(s < b and a < e and (s, e) == (a, b) for a, b in taken):
                continue
            taken.append((s, e))
            out.append((kind, s, e))
    out.sort(key=lambda x: x[1])
    return out
