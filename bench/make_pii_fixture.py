"""Write tests/fixtures/pii/conversations.jsonl: realistic support conversations (EN, DE, FR, ES) with every
personal-data span labelled, plus look-alikes that must stay (prices, dates, product codes, tracking numbers,
error codes, versions, totals). Deterministic: the same seed writes the same bytes.

    .venv/bin/python bench/make_pii_fixture.py            # rewrites the fixture
    .venv/bin/python bench/make_pii_fixture.py --check    # exits 1 if the checked-in file differs

Each line: {"id", "lang", "messages": [{"role", "content"}], "spans": [{"message", "start", "end", "type"}]}.
Values are invented: names from lists, numbers random but valid (Luhn for cards, mod-97 for IBANs,
libphonenumber for phones) so that a detector that checks them can find them.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from pathlib import Path

import phonenumbers

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pii" / "conversations.jsonl"
SEED = 12
CONVERSATIONS_PER_TEMPLATE = 4

FIRST = ["Anna", "Tom", "Maria", "Jonas", "Claire", "Lucía", "Pierre", "Sophie", "Miguel", "Emma", "Lukas", "Chloé",
         "Javier", "Olivia", "Felix", "Camille", "Carmen", "Noah", "Lena", "Hugo"]
LAST = ["Smith", "Schmidt", "Dubois", "García", "Müller", "Martin", "Fernández", "Johnson", "Weber", "Bernard",
        "López", "Brown", "Fischer", "Moreau", "Sánchez", "Taylor", "Wagner", "Laurent", "Romero", "Clarke"]
DOMAINS = ["example.com", "mail.example.org", "example.de", "example.fr", "example.es", "inbox.example.net"]


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban_len: int, rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(bban_len))
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + bban[4:]
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def phone(region: str, style: str, rng: random.Random) -> str:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    digits = str(example.national_number)
    while True:
        keep = rng.randint(2, 3)
        nn = digits[:keep] + "".join(rng.choice(string.digits) for _ in range(len(digits) - keep))
        num = phonenumbers.parse(f"+{example.country_code}{nn}")
        if phonenumbers.is_valid_number(num):
            break
    fmt = {"intl": phonenumbers.PhoneNumberFormat.INTERNATIONAL, "national": phonenumbers.PhoneNumberFormat.NATIONAL,
           "e164": phonenumbers.PhoneNumberFormat.E164}[style]
    return phonenumbers.format_number(num, fmt)


def make_value(kind: str, lang: str, rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    ascii_name = lambda s: s.translate(str.maketrans("áéíóúüöäçñ", "aeiouuoacn")).lower()  # noqa: E731
    if kind == "EMAIL":
        user = rng.choice([f"{ascii_name(first)}.{ascii_name(last)}", f"{ascii_name(first)}{rng.randint(1, 99)}",
                           f"{ascii_name(first)[0]}{ascii_name(last)}+orders"])
        return f"{user}@{rng.choice(DOMAINS)}"
    if kind == "PHONE":
        region = {"en": rng.choice(["US", "GB"]), "de": "DE", "fr": "FR", "es": "ES"}[lang]
        return phone(region, rng.choice(["intl", "intl", "national", "e164"]), rng)
    if kind == "CARD":
        prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15)])
        n = luhn_complete(prefix, length, rng)
        if length == 15:
            return rng.choice([n, f"{n[:4]} {n[4:10]} {n[10:]}"])
        sep = rng.choice([" ", "-", ""])
        return sep.join(n[i:i + 4] for i in range(0, 16, 4))
    if kind == "IBAN":
        c, n = {"en": ("GB", 18), "de": ("DE", 18), "fr": ("FR", 23), "es": ("ES", 20)}[lang]
        value = iban(c, n, rng)
        return rng.choice([value, " ".join(value[i:i + 4] for i in range(0, len(value), 4))])
    if kind == "IP":
        if rng.random() < 0.2:
            return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(6))
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "URL":
        token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
        return rng.choice([
            f"https://app.example-shop.com/reset-password?token={token}",
            f"https://portal.example.com/users/{ascii_name(first)}{ascii_name(last)}/settings",
            f"https://www.instagram.com/{ascii_name(first)}_{ascii_name(last)}",
            f"https://example-shop.com/account/orders?session={token}",
            f"https://mail.example.com/unsubscribe?email={ascii_name(first)}%40{rng.choice(DOMAINS)}",
            f"https://app.example-shop.com/invite/{token}",
        ])
    if kind == "HANDLE":
        return "@" + rng.choice([f"{ascii_name(first)}_{ascii_name(last)}", f"{ascii_name(first)}{rng.randint(70, 99)}",
                                 f"{ascii_name(last)}.{ascii_name(first)[0]}"])
    if kind == "ADDRESS":
        n = rng.randint(1, 180)
        return {
            "en": rng.choice([f"{n} Baker Street", f"{n} Maple Avenue, Apt {rng.randint(1, 30)}",
                              f"{n} Elm Road, Springfield, IL {rng.randint(10000, 99999)}"]),
            "de": rng.choice([f"Hauptstraße {n}, {rng.randint(10000, 99999)} Berlin", f"Lindenweg {n}a",
                              f"Berliner Allee {n}, {rng.randint(10000, 99999)} Düsseldorf"]),
            "fr": rng.choice([f"{n} rue de la Paix, {rng.randint(10000, 95999)} Paris", f"{n} avenue Victor Hugo",
                              f"{n} bis, boulevard Voltaire, {rng.randint(10000, 95999)} Lyon"]),
            "es": rng.choice([f"Calle Mayor {n}, {rng.randint(10000, 52999)} Madrid", f"Avenida de la Constitución {n}",
                              f"Calle de Alcalá, nº {n}, {rng.randint(10000, 52999)} Madrid"]),
        }[lang]
    if kind in ("PERSON", "FULLNAME"):
        return f"{first} {last}" if kind == "FULLNAME" else first
    raise ValueError(kind)


def make_lookalike(kind: str, rng: random.Random) -> str:
    return {
        "PRICE": lambda: rng.choice([f"${rng.randint(5, 2000)}.{rng.randint(0, 99):02d}", f"{rng.randint(5, 999)},{rng.randint(0, 99):02d} €",
                                     f"€{rng.randint(1, 9)}.{rng.randint(100, 999)},00", f"£{rng.randint(5, 500)}"]),
        "DATE": lambda: rng.choice([f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                                    f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2024",
                                    f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025"]),
        "PRODUCT": lambda: rng.choice([f"SKU {rng.choice('ABCXYZ')}{rng.choice('ABCXYZ')}-{rng.randint(1000, 9999)}-X",
                                       f"model XR-{rng.randint(100, 9999)}", f"EAN 40{rng.randint(10**10, 10**11 - 1)}"]),
        "TRACKING": lambda: rng.choice([f"1Z{rng.randint(100, 999)}AA1{rng.randint(10**11, 10**12 - 1)}",
                                        f"JJD{rng.randint(10**14, 10**15 - 1)}",
                                        f"{rng.randint(10**21, 10**22 - 1)}"]),
        "ERROR": lambda: rng.choice([f"0x8007{rng.randint(1000, 9999)}", f"E-{rng.randint(1000, 9999)}",
                                     f"HTTP {rng.choice([403, 404, 500, 502, 503])}", f"ERR_{rng.randint(100, 999)}"]),
        "VERSION": lambda: rng.choice([f"v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}",
                                       f"version {rng.randint(1, 12)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(100, 999)}",
                                       f"build {rng.randint(1000, 99999)}"]),
        "ORDER": lambda: rng.choice([f"#{rng.randint(10**6, 10**8)}", f"{rng.randint(10**7, 10**8)}"]),
        "HELPURL": lambda: rng.choice(["https://help.example-shop.com/articles/returns", "https://example-shop.com/faq#shipping",
                                       "https://status.example.com", "www.example-shop.com/help/warranty"]),
        "TIME": lambda: f"{rng.randint(8, 18)}:{rng.choice(['00', '15', '30', '45'])}",
    }[kind]()


# Slots: {KIND} or {KIND2} (a second value of that kind); the same slot repeats the same value in a conversation.
TEMPLATES: dict[str, list[list[str]]] = {
    "en": [
        ["Hi, my name is {FULLNAME}. My order {ORDER} for {PRICE} hasn't arrived, it was due {DATE}. You can reach me at {EMAIL} or {PHONE}.",
         "Sorry about that! I see order {ORDER} shipped with tracking {TRACKING}. I've sent an update to {EMAIL}.",
         "Thanks. If the courier calls, {PHONE} is my mobile.",
         "Noted. It should arrive by {DATE2}."],
        ["I was charged twice on card {CARD} for the {PRODUCT} ({PRICE}).",
         "I'm sorry! Can you confirm the last charge date? For security please never send the full card number.",
         "It was {DATE}. Refund to IBAN {IBAN} instead please.\n\nKind regards,\n{PERSON}",
         "Thank you, the refund of {PRICE} is on its way."],
        ["The app shows error {ERROR} after updating to {VERSION}. My login is from IP {IP}.",
         "Thanks. Does it also happen on {HELPURL}? Please try the reset link we sent.",
         "The link {URL} says expired. My Twitter is {HANDLE} if you want to DM me.",
         "I've generated a new one. Error {ERROR} is fixed in {VERSION2}."],
        ["Please ship the replacement to {ADDRESS}. Mr. {PERSON} will sign for it.",
         "Sure. The replacement {PRODUCT} will go out today at {TIME}, total {PRICE}.",
         "Great. Any questions, call {PHONE}.",
         "Will do. Ticket {ORDER} is updated."],
        ["Hello, I'm {PERSON} and I can't log in since {DATE}. My account email is {EMAIL}.",
         "I've found your account. I see sign-ins from {IP} and {IP2}; is that you?",
         "Only the first one. Here is my profile: {URL}",
         "Thanks, I've locked the other session. See {HELPURL} for tips."],
        # Harder: a bare name (no phrasing a pattern can anchor on) and a phone number in running text.
        ["{PERSON} from our accounts team asked me to chase invoice {ORDER}; you can call her on {PHONE}.",
         "Of course. The invoice from {DATE} for {PRICE} was paid; I've emailed the receipt to {EMAIL}.",
         "Great, {PERSON} says thanks. She also asked about the {PRODUCT} firmware {VERSION}.",
         "That firmware is current; there is no known issue ({ERROR} was fixed in {VERSION2})."],
    ],
    "de": [
        ["Hallo, mein Name ist {FULLNAME}. Meine Bestellung {ORDER} über {PRICE} ist seit dem {DATE} unterwegs. Erreichbar unter {PHONE} oder {EMAIL}.",
         "Das tut uns leid! Die Sendung {TRACKING} liegt im Paketzentrum. Wir melden uns unter {EMAIL}.",
         "Danke. Bitte an {ADDRESS} liefern, nicht an die alte Adresse.",
         "Erledigt, die neue Lieferadresse ist gespeichert."],
        ["Ich wurde für den Artikel {PRODUCT} doppelt belastet, Karte {CARD}.",
         "Das prüfen wir. Bitte senden Sie uns nie die volle Kartennummer.",
         "Bitte erstatten Sie {PRICE} auf mein Konto, IBAN {IBAN}.\n\nMit freundlichen Grüßen\n{PERSON}",
         "Vielen Dank, die Erstattung ist veranlasst (Fehlercode {ERROR} behoben)."],
        ["Nach dem Update auf {VERSION} kommt Fehler {ERROR}. Meine IP ist {IP}.",
         "Bitte nutzen Sie diesen Link: {URL}. Hilfe gibt es unter {HELPURL}.",
         "Danke! Auf Instagram bin ich {HANDLE}, falls Sie Screenshots brauchen.",
         "Gern, bis morgen um {TIME}."],
        ["Guten Tag, Frau {PERSON} hier. Meine Handynummer hat sich geändert: {PHONE}.",
         "Danke, Frau {PERSON}. Die alte Nummer {PHONE2} haben wir gelöscht.",
         "Und die Rechnung vom {DATE} über {PRICE} bitte an {EMAIL}.",
         "Wird gemacht."],
    ],
    "fr": [
        ["Bonjour, je m'appelle {FULLNAME}. Ma commande {ORDER} de {PRICE} n'est pas arrivée depuis le {DATE}.",
         "Désolé ! Le colis {TRACKING} est en transit. Pouvez-vous confirmer votre adresse ?",
         "C'est {ADDRESS}. Mon numéro : {PHONE}, mon e-mail : {EMAIL}.",
         "Merci, nous vous tiendrons informé à {EMAIL}."],
        ["J'ai été débité deux fois sur la carte {CARD} pour le {PRODUCT}.",
         "Nous vérifions. N'envoyez jamais le numéro complet de votre carte.",
         "Merci de rembourser {PRICE} sur mon IBAN {IBAN}.\n\nCordialement,\n{PERSON}",
         "Le remboursement est en cours, code {ERROR}."],
        ["Depuis la {VERSION}, l'appli affiche {ERROR}. Mon adresse IP : {IP}.",
         "Essayez ce lien de réinitialisation : {URL}. Voir aussi {HELPURL}.",
         "Ça marche, merci ! Je suis {HANDLE} sur Twitter.",
         "Parfait, bonne journée."],
        ["Bonjour, c'est Mme {PERSON}. Rappelez-moi au {PHONE} s'il vous plaît, avant {TIME}.",
         "Bien sûr, Mme {PERSON}. La facture du {DATE} de {PRICE} est envoyée.",
         "Merci. Livraison au {ADDRESS}.",
         "C'est noté."],
    ],
    "es": [
        ["Hola, me llamo {FULLNAME}. Mi pedido {ORDER} de {PRICE} no ha llegado desde el {DATE}.",
         "¡Lo sentimos! El envío {TRACKING} está en reparto. ¿Nos confirma la dirección?",
         "Es {ADDRESS}. Mi teléfono es {PHONE} y mi correo {EMAIL}.",
         "Gracias, le escribiremos a {EMAIL}."],
        ["Me han cobrado dos veces en la tarjeta {CARD} el {PRODUCT}.",
         "Lo revisamos. Nunca envíe el número completo de la tarjeta.",
         "Devuélvanme {PRICE} a mi IBAN {IBAN}.\n\nSaludos,\n{PERSON}",
         "El reembolso está en marcha (error {ERROR} corregido)."],
        ["Desde la {VERSION} la app da el error {ERROR}. Mi IP es {IP}.",
         "Use este enlace para restablecer la contraseña: {URL}. Más ayuda en {HELPURL}.",
         "Gracias. En Instagram soy {HANDLE}.",
         "Perfecto, hasta las {TIME}."],
        ["Buenos días, soy la Sra. {PERSON}. Llámenme al {PHONE}, por favor.",
         "Claro, Sra. {PERSON}. La factura del {DATE} por {PRICE} está enviada.",
         "Gracias. El envío a {ADDRESS}.",
         "Anotado."],
    ],
}
PII = {"EMAIL", "PHONE", "CARD", "IBAN", "IP", "URL", "HANDLE", "ADDRESS", "PERSON", "FULLNAME"}
LABEL = {"FULLNAME": "PERSON"}
SLOT = re.compile(r"\{([A-Z]+?)(2?)\}")


def fill(template: list[str], lang: str, rng: random.Random) -> tuple[list[dict], list[dict]]:
    values: dict[str, str] = {}
    messages, spans = [], []
    for i, text in enumerate(template):
        out, pos = [], 0
        for m in SLOT.finditer(text):
            out.append(text[pos:m.start()])
            kind, slot = m.group(1), m.group(0)
            if slot not in values:
                values[slot] = make_value(kind, lang, rng) if kind in PII else make_lookalike(kind, rng)
            start = sum(len(p) for p in out)
            out.append(values[slot])
            if kind in PII:
                spans.append({"message": i, "start": start, "end": start + len(values[slot]),
                              "type": LABEL.get(kind, kind)})
            pos = m.end()
        out.append(text[pos:])
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": "".join(out)})
    return messages, spans


def build() -> str:
    rng = random.Random(SEED)
    lines = []
    for lang, templates in TEMPLATES.items():
        for t, template in enumerate(templates):
            for k in range(CONVERSATIONS_PER_TEMPLATE):
                messages, spans = fill(template, lang, rng)
                lines.append(json.dumps({"id": f"{lang}-{t}-{k}", "lang": lang, "messages": messages, "spans": spans},
                                        ensure_ascii=False))
    return "\n".join(lines) + "\n"


def main() -> int:
    text = build()
    if "--check" in sys.argv:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("fixture up to date" if same else f"{OUT} differs from what bench/make_pii_fixture.py writes")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    spans = [s for line in text.splitlines() for s in json.loads(line)["spans"]]
    counts: dict[str, int] = {}
    for s in spans:
        counts[s["type"]] = counts.get(s["type"], 0) + 1
    print(f"wrote {OUT} ({len(text.splitlines())} conversations, {len(spans)} spans: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
