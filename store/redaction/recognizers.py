"""The Presidio recognizers tuneloop runs: Presidio's own (card, IBAN, IP, phone) plus pattern recognizers for
the rest, all offline and without a spaCy model. Each recognizer reports one of settings.TYPES or a custom label.

Presidio's regex recognizers use the `regex` module, whose variable-length look-behind lets a pattern match
only the name after "my name is" or only the street of an address.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import phonenumbers
import regex as re
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.predefined_recognizers import (CreditCardRecognizer, EmailRecognizer, IbanRecognizer,
                                                      IpRecognizer, PhoneRecognizer)

from store.redaction.settings import CustomPattern, RedactionSettings

# Our own patterns are case-sensitive (a name starts with a capital); keywords use inline (?i:...).
CASE_SENSITIVE = re.MULTILINE

# Regions whose national formats are tried, in order, for numbers written without +country code.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "AT", "CH", "BE", "CA", "AU", "IE", "MX", "BR", "IN")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail pattern without its tldextract check, which downloads the public suffix list."""

    _TLD = re.compile(r"\.[^\W\d_]{2,24}$")

    def __init__(self) -> None:
        super().__init__(supported_entity="EMAIL")

    def validate_result(self, pattern_text: str) -> bool:
        return bool(self._TLD.search(pattern_text))


def _is_card_number(text: str) -> bool:
    """13 to 19 digits passing the Luhn check: the card recognizer's, not worth searching for phones inside."""
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


class CandidatePhoneRecognizer(PhoneRecognizer):
    """Presidio's PhoneRecognizer idea (libphonenumber validation), run only on digit runs that could be a number.

    Presidio's version scans the whole text with a PhoneNumberMatcher once per region, which was 95% of the
    analysis time; here a cheap regex finds candidates, a "+" or "00" number is parsed as international,
    and any other is tried in the regions in order until one calls it a valid number."""

    CANDIDATE = re.compile(r"(?<![\w+/.,#:-])(?:\+|00)?\(?\d[\d \t().\-/]{4,60}\d(?![\w/]|[.,:]\d)")
    # Dates and times that libphonenumber can accept in some region's format.
    DATE_LIKE = re.compile(r"^\d{1,4}([./-])\d{1,2}\1\d{1,4}$|^\d{1,2}:\d{2}|^\d{1,3}(?:\.\d{1,3}){3}$")
    # A number introduced as an order, parcel, invoice or ticket number is not a phone number ("number" alone
    # says nothing: "my number is", "Nummer", "numéro" introduce phones as often)...
    NOT_PHONE_BEFORE = re.compile(
        r"(?i)(?:order|tracking|parcel|invoice|ticket|case|sku|serial|ref|reference|article|item|ean|barcode|"
        r"account|customer|bestell|sendung|rechnung|auftrag|kunden|artikel|commande|colis|facture|suivi|dossier|"
        r"pedido|envío|envio|factura|seguimiento|referencia)"
        r"[\w.]*(?:[ \t]+(?:number|no\.?|nr\.?|nummer|numéro|número|id))?[ \t]*[:#.]?[ \t]*$")
    # ...unless the words right before it say it is one.
    PHONE_BEFORE = re.compile(r"(?i)\b(?:phone|tel|mobile|cell|call|fax|whatsapp|telefon|handy|mobil|rückruf|"
                              r"téléphone|telephone|portable|appel|teléfono|telefono|móvil|movil|llamar)")

    def __init__(self, regions: tuple[str, ...] = PHONE_REGIONS) -> None:
        super().__init__(supported_entity="PHONE", supported_regions=regions, leniency=1)

    def _valid(self, chunk: str) -> bool:
        international = chunk.startswith(("+", "00"))
        regions = (None,) if international else self.supported_regions
        text = "+" + chunk[2:] if chunk.startswith("00") else chunk
        for region in regions:
            try:
                number = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102 - see the class docstring
        results = []
        for cand in self.CANDIDATE.finditer(text):
            chunk = cand.group().rstrip(" \t-/(")
            digits = sum(c.isdigit() for c in chunk)
            if digits < 7 or self.DATE_LIKE.match(chunk):
                continue
            before = text[max(0, cand.start() - 30):cand.start()]
            if self.NOT_PHONE_BEFORE.search(before) and not self.PHONE_BEFORE.search(before):
                continue
            if chunk.count("(") != chunk.count(")"):
                chunk = chunk.lstrip("(")
            offset = cand.start() + cand.group().index(chunk)
            if 7 <= digits <= 15 and self._valid(chunk):
                results.append(self._result(offset, offset + len(chunk)))
            elif re.search(r"[ \t]", chunk) and not _is_card_number(chunk):
                # A run holding more than one number ("+44 20 7946 0958 4111 1111 ..."): the longest valid
                # prefix of whole groups is a number, and the rest is tried again the same way.
                results += [self._result(offset + a, offset + b) for a, b in self._numbers_in(chunk)]
        return results

    def _numbers_in(self, chunk: str) -> list[tuple[int, int]]:
        bounds = [m.start() for m in re.finditer(r"[ \t]+", chunk)] + [len(chunk)]
        out, start = [], 0
        while start < len(chunk):
            for end in reversed([b for b in bounds if b > start]):
                piece = chunk[start:end]
                if 7 <= sum(c.isdigit() for c in piece) <= 15 and self._valid(piece):
                    out.append((start, end))
                    break
            else:
                end = next((b for b in bounds if b > start), len(chunk))
            nxt = re.compile(r"[ \t]+").match(chunk, end)
            start = nxt.end() if nxt else end + 1
        return out

    def _result(self, start: int, end: int) -> RecognizerResult:
        return RecognizerResult("PHONE", start, end, 0.9,
                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})


class PersonalUrlRecognizer(PatternRecognizer):
    """Links that identify a person or unlock something: tokens in the query, /users/NAME-like paths,
    password-reset and sign-in links, social profiles, long random path segments. A help-centre
    link stays: it is useful training text and personal to nobody."""

    URL = r"(?i)\b(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]"
    SECRET_KEYS = {"token", "access_token", "refresh_token", "id_token", "auth", "key", "apikey", "api_key",
                   "sig", "signature", "code", "session", "sessionid", "sid", "email", "mail", "user", "userid",
                   "user_id", "uid", "otp", "password", "pwd", "invite", "reset", "secret", "hash", "jwt", "phone"}
    PERSONAL_PATH = re.compile(
        r"(?i)/(?:users?|u|profiles?|people|members?|accounts?|customers?|in|home|~[^/]+)/[^/?#]+"
        r"|/(?:reset|reset-password|password-reset|password/reset|forgot-password|verify|verification|confirm"
        r"|activate|invite|invitation|unsubscribe|magic-link|login/token|auth/callback)(?:[/?#]|$)")
    SOCIAL = re.compile(r"(?i)^(?:www\.)?(?:twitter\.com|x\.com|instagram\.com|facebook\.com|fb\.com|tiktok\.com"
                        r"|linkedin\.com|github\.com|t\.me|threads\.net|mastodon\.[a-z]+)$")
    TOKEN_LIKE = re.compile(r"(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}")
    NON_PERSONAL_FIRST = frozenset("help support docs doc faq status pricing blog about contact legal privacy terms "
                                   "login signin sign-in shop store search explore hashtag intent share".split())

    def __init__(self) -> None:
        super().__init__(supported_entity="URL", name="PersonalUrlRecognizer",
                         patterns=[Pattern("url", self.URL, 0.5)], global_regex_flags=CASE_SENSITIVE)

    def validate_result(self, pattern_text: str) -> bool:
        url = pattern_text if "://" in pattern_text else "http://" + pattern_text
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        if "@" in parts.path or "@" in parts.query or "%40" in url:
            return True
        if any(k.lower() in self.SECRET_KEYS or self.TOKEN_LIKE.fullmatch(v)
               for k, v in parse_qsl(parts.query, keep_blank_values=True)):
            return True
        path = parts.path
        first = path.strip("/").split("/")[0].lower()
        if self.SOCIAL.match(parts.hostname or "") and first and first not in self.NON_PERSONAL_FIRST:
            return True
        if self.PERSONAL_PATH.search(path):
            return True
        return any(self.TOKEN_LIKE.fullmatch(seg) for seg in path.split("/")) or bool(
            self.TOKEN_LIKE.search(parts.fragment))


def handle_recognizer() -> PatternRecognizer:
    """@name not preceded by a word character (that would be an e-mail address) nor followed by a domain."""
    return PatternRecognizer(
        supported_entity="HANDLE", name="HandleRecognizer", global_regex_flags=CASE_SENSITIVE,
        patterns=[Pattern("handle", r"(?<![\w@./])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?(?![\w@]|\.[A-Za-z])",
                          0.8)])


# A capitalised word in Latin scripts (Anna, Müller, O'Brien, Jean-Luc, José).
_CAP = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+(?:['’-][A-ZÀ-ÖØ-Þa-zß-öø-ÿ][a-zß-öø-ÿ]+)?"
_NAME = rf"{_CAP}(?:[ \t]+(?:(?:van|von|de|del|della|da|di|du|le|la)[ \t]+)?{_CAP}){{0,2}}"
_STREET_WORD = (r"(?:Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Lane|Ln\.?|Drive|Dr\.?|Boulevard|Blvd\.?|Court|Ct\.?"
                r"|Way|Place|Pl\.?|Terrace|Close|Crescent|Square|Sq\.?|Parkway|Pkwy\.?|Highway|Hwy\.?)")
# A city: one word, hyphenated words, "Frankfurt am Main", "Bad Homburg", "San Sebastián" (never a bare
# second word, which would swallow the name or word that follows).
_CITY = (r"(?:(?:Bad|San|Santa|Saint|St\.|New|Le|La|El|Los|Las)[ ])?[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+"
         r"(?:-[A-ZÀ-ÖØ-Þ]?[a-zß-öø-ÿ]+)*(?:[ ](?:am|an|im|sur|de|del|la|le)[ ][A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+)?")
_POST_CITY = rf"(?:,?[ \t]*(?:[A-Z]-)?\d{{5}}[ \t]+{_CITY})?"
_UNIT = r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Unit|Flat|Wohnung|Whg\.|Piso|Puerta|Étage)\.?[ \t]*#?\d+[A-Za-z]?)?"

ADDRESS_PATTERNS = [
    # 221B Baker Street, Apt 4 / 1600 Pennsylvania Avenue NW, Washington, DC 20500
    Pattern("address_en", rf"\b\d{{1,5}}[A-Za-z]?[ \t]+(?:[A-Z][a-z]+\.?[ \t]+){{1,3}}{_STREET_WORD}(?![a-z])"
                          rf"(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W)\b)?{_UNIT}"
                          rf"(?:,[ \t]*{_CITY}(?:,[ \t]*[A-Z]{{2}})?[ \t]+\d{{5}}(?:-\d{{4}})?)?", 0.7),
    # Hauptstraße 5a, 10115 Berlin / Berliner Straße 12 / Am Ring 3 is too ambiguous and left out.
    Pattern("address_de", rf"\b[A-ZÄÖÜ][a-zäöüß]+(?:-[A-ZÄÖÜ][a-zäöüß]+)*(?:straße|strasse|str\.|weg|allee|platz"
                          rf"|gasse|ring|damm|ufer|chaussee)[ \t]+\d{{1,4}}(?:[ \t]?[a-z])?\b{_UNIT}{_POST_CITY}", 0.7),
    Pattern("address_de_two_words", rf"\b[A-ZÄÖÜ][a-zäöüß]+[ \t]+(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring)"
                                    rf"[ \t]+\d{{1,4}}(?:[ \t]?[a-z])?\b{_UNIT}{_POST_CITY}", 0.7),
    # 12 bis, rue de la Paix, 75002 Paris
    Pattern("address_fr", rf"\b\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?i:rue|avenue|av\.|boulevard|bd|place|chemin"
                          rf"|allée|impasse|quai|route|cours)[ \t]+(?:(?:de[ \t]+la|de[ \t]+l'|du|des|de|d')[ \t]*)?"
                          rf"[A-ZÀ-ÖØ-Þ][\w'’-]+(?:[ \t]+(?:de[ \t]+|du[ \t]+|la[ \t]+)?[A-ZÀ-ÖØ-Þ][\w'’-]+){{0,3}}"
                          rf"{_POST_CITY}", 0.7),
    # Calle Mayor 12, 3º B, 28013 Madrid / Avda. de la Constitución, nº 5
    Pattern("address_es", rf"\b(?:Calle|C/|Avenida|Avda\.?|Plaza|Pza\.?|Paseo|Camino|Carrer|Ronda|Travesía)[ \t]*"
                          rf"(?:(?:de[ \t]+la|de[ \t]+los|de[ \t]+las|del|de)[ \t]+)?[A-ZÀ-ÖØ-Þ][\wáéíóúñ]+"
                          rf"(?:[ \t]+(?:de[ \t]+)?[A-ZÀ-ÖØ-Þ][\wáéíóúñ]+){{0,3}},?[ \t]*(?:n[º°o]\.?[ \t]*)?\d{{1,4}}"
                          rf"(?:,?[ \t]*\d{{1,2}}[º°ª]?(?:[ \t]*[A-Z])?\b)?{_POST_CITY}", 0.7),
    # A postcode with its city after a comma or at a line start: ", 10115 Berlin", "75002 Paris".
    Pattern("postcode_city", rf"(?:(?<=,[ \t]*)|(?<=^[ \t]*))(?:[A-Z]-)?\d{{5}}[ \t]+{_CITY}\b", 0.6),
    # UK postcodes (SW1A 1AA, M1 1AE) and US "City, ST 12345".
    Pattern("postcode_uk", r"\b(?:[A-Z]{1,2}\d[A-Z\d]?|GIR)[ \t]\d[ABD-HJLNP-UW-Z]{2}\b", 0.6),
    Pattern("city_state_zip", rf"\b{_CITY},[ \t][A-Z]{{2}}[ \t]\d{{5}}(?:-\d{{4}})?\b", 0.6),
]

# Names only in fixed phrasings: without a named-entity model a bare "Anna" is not detectable.
_INTRO = (r"(?i:my name is|my name's|i'm|i am|this is|mein name ist|ich heiße|ich heisse|je m'appelle|je m’appelle"
          r"|mon nom est|me llamo|mi nombre es)")
_TITLE = (r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Mme|Mlle|Monsieur|Madame|Sr|Sra|Srta|Señor|Señora|Don|Doña)\.?"
          r"|M\.")
_GREETING = r"(?i:hi|hello|hey|dear|hallo|liebe|lieber|bonjour|salut|cher|chère|hola|estimado|estimada|querido|querida)"
_SIGNOFF = (r"(?i:regards|best regards|kind regards|warm regards|best|thanks|thank you|many thanks|cheers|sincerely"
            r"|yours|mit freundlichen grüßen|mit freundlichen grüssen|viele grüße|beste grüße|liebe grüße|grüße|lg"
            r"|cordialement|bien cordialement|bien à vous|merci|salutations|saludos|un saludo|atentamente|gracias"
            r"|muchas gracias)")
PERSON_PATTERNS = [
    Pattern("intro", rf"(?<=\b{_INTRO}[ \t]+){_NAME}(?=[ \t]*(?:[,.!;:\n]|$|(?i:[ \t]+(?:from|at|with|here|von|de|del|"
                     rf"speaking|and|und|et|y)\b)))", 0.7),
    Pattern("title", rf"(?<=\b(?:{_TITLE})[ \t]+){_NAME}", 0.8),
    Pattern("greeting", rf"(?<=(?:^|[\n.!?][ \t]*)\b{_GREETING}[ \t]+){_NAME}(?=[ \t]*[,!\n])", 0.6),
    Pattern("signoff", rf"(?<=\b{_SIGNOFF}[ \t]*[,.!]?[ \t]*\n?[ \t]*(?:-[ \t]*)?){_NAME}(?=[ \t]*(?:\n|$))", 0.6),
]
# Capitalised words these phrasings catch that are not names (German capitalises every noun).
NOT_NAMES = frozenset("""
team support service services customer customers client clients care help desk helpdesk everyone all there sir madam
folks guys friends zusammen kundenservice kunde kundin equipo todos tous client clientes cliente soporte sorry happy
not just also very so glad here back unable afraid sure okay ok interested new available calling writing looking
the a an and your our my this that what order account admin manager agent bot assistant
""".split())


class NamePhraseRecognizer(PatternRecognizer):
    """Person names after 'my name is', titles, greetings and sign-offs; common non-names dropped."""

    def __init__(self) -> None:
        super().__init__(supported_entity="PERSON", name="NamePhraseRecognizer", patterns=PERSON_PATTERNS,
                         global_regex_flags=CASE_SENSITIVE)

    def invalidate_result(self, pattern_text: str) -> bool:
        return any(w.lower().strip("'’-") in NOT_NAMES for w in pattern_text.split())


def custom_recognizer(pattern: CustomPattern) -> PatternRecognizer:
    return PatternRecognizer(supported_entity=pattern.label, name=f"custom:{pattern.label}",
                             patterns=[Pattern(pattern.label, pattern.regex, 1.0)], global_regex_flags=CASE_SENSITIVE)


def build_recognizers(settings: RedactionSettings) -> list[EntityRecognizer]:
    """The recognizers for `settings`: one per enabled built-in type, one per custom pattern."""
    makers = {
        "EMAIL": OfflineEmailRecognizer,
        "URL": PersonalUrlRecognizer,
        "CARD": lambda: CreditCardRecognizer(supported_entity="CARD"),
        "IBAN": lambda: IbanRecognizer(supported_entity="IBAN"),
        "PHONE": CandidatePhoneRecognizer,
        "IP": lambda: IpRecognizer(supported_entity="IP"),
        "ADDRESS": lambda: PatternRecognizer(supported_entity="ADDRESS", name="AddressRecognizer",
                                             patterns=ADDRESS_PATTERNS, global_regex_flags=CASE_SENSITIVE),
        "HANDLE": handle_recognizer,
        "PERSON": NamePhraseRecognizer,
    }
    out = [make() for t, make in makers.items() if t in settings.types]
    return out + [custom_recognizer(p) for p in settings.patterns]
