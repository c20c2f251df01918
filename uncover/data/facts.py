"""A built-in table of factual associations (subject, relation, attribute) with prompt templates.

Facts are written by hand from general knowledge. Attributes are common words with a leading space
(" Paris"), so they are a single token for typical BPE tokenizers; ``known_facts`` keeps only those
that are one token for a given model and that the model predicts greedily.

    >>> fact = Fact("France", "capital", " Paris")
    >>> fact.prompt()
    'The capital of France is'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from uncover.errors import UncoverError, closest

if TYPE_CHECKING:
    from uncover.core.model import Model


@dataclass(frozen=True)
class Relation:
    """A relation with prompt templates; ``{}`` marks the subject, the attribute follows the prompt.

    The first template is canonical (used for editing and tracing); the others are paraphrases.
    """

    name: str
    templates: tuple[str, ...]


@dataclass(frozen=True)
class Fact:
    """One association; ``attribute`` is the next word after the prompt, with its leading space."""

    subject: str
    relation: str
    attribute: str

    def prompt(self, i: int = 0) -> str:
        """The prompt from template ``i`` of the relation (0 = canonical)."""
        templates = RELATIONS[self.relation].templates
        if not 0 <= i < len(templates):
            raise UncoverError(
                f"relation {self.relation!r} has templates 0..{len(templates) - 1}; got {i}"
            )
        return templates[i].format(self.subject)

    def prompts(self) -> list[str]:
        """The prompts from every template of the relation, canonical first."""
        return [t.format(self.subject) for t in RELATIONS[self.relation].templates]


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation("capital", (
            "The capital of {} is",
            "The capital city of {} is",
            "{}'s capital city is",
            "The capital of {} is the city of",
        )),
        Relation("city_country", (
            "{} is a city in the country of",
            "The city of {} is located in",
            "{} is a city located in the country of",
            "The city of {} lies in the country of",
        )),
        Relation("landmark_city", (
            "The {} is located in the city of",
            "The {} can be found in the city of",
            "Tourists who visit the {} are in the city of",
            "The {} is a famous landmark in",
        )),
        Relation("company_country", (
            "The company {} comes from the country of",
            "The company {} is based in the country of",
            "{} is a company from the country of",
            "The headquarters of {} are in the country of",
        )),
        Relation("language", (
            "The official language of {} is",
            "{}'s official language is",
            "In {}, the official language is",
            "The language officially used in {} is",
        )),
        Relation("continent", (
            "{} is a country in",
            "{} is a country located on the continent of",
            "The country of {} is part of the continent of",
            "{} lies on the continent of",
        )),
        Relation("currency", (
            "The official currency of {} is the",
            "The currency of {} is the",
            "{}'s currency is the",
            "The currency used in {} is the",
        )),
        Relation("element_state", (
            "At standard temperature and pressure, {} exists as a",
            "At room temperature, {} is a",
            "Under normal conditions, {} exists as a",
            "At room temperature, {} exists as a",
        )),
        Relation("element_symbol", (
            "The chemical symbol for {} is",
            "The chemical symbol of {} is",
            "On the periodic table, {} has the symbol",
            "In chemistry, the element {} is written with the symbol",
        )),
        Relation("animal_class", (
            "The {} is an animal classified as a",
            "In biology, the {} is classified as a",
            "Scientifically, the {} is classified as a",
            "Zoologists classify the {} as a",
        )),
        Relation("opposite", (
            "The opposite of {} is",
            "The antonym of {} is",
            "The word that means the opposite of {} is",
            "What is the opposite of {}? It is",
        )),
        Relation("dish_country", (
            "{} is a traditional dish from",
            "{} is a food that comes from",
            "The dish {} originally comes from",
            "{} is a famous dish that originated in",
        )),
    ]
}

# relation -> attribute word -> subjects. Written from general knowledge; ambiguous subjects
# (a city name shared by two countries, disputed origins, multi-word attributes) are left out.
_TABLE: dict[str, dict[str, list[str]]] = {
    "capital": {
        "Paris": ["France"], "Berlin": ["Germany"], "Rome": ["Italy"], "Madrid": ["Spain"],
        "Lisbon": ["Portugal"], "London": ["England"], "Dublin": ["Ireland"],
        "Amsterdam": ["the Netherlands"], "Brussels": ["Belgium"], "Vienna": ["Austria"],
        "Bern": ["Switzerland"], "Warsaw": ["Poland"], "Prague": ["the Czech Republic"],
        "Budapest": ["Hungary"], "Athens": ["Greece"], "Stockholm": ["Sweden"], "Oslo": ["Norway"],
        "Copenhagen": ["Denmark"], "Helsinki": ["Finland"], "Reykjavik": ["Iceland"],
        "Moscow": ["Russia"], "Bucharest": ["Romania"], "Sofia": ["Bulgaria"],
        "Belgrade": ["Serbia"], "Zagreb": ["Croatia"], "Ankara": ["Turkey"], "Cairo": ["Egypt"],
        "Nairobi": ["Kenya"], "Abuja": ["Nigeria"], "Rabat": ["Morocco"], "Algiers": ["Algeria"],
        "Tunis": ["Tunisia"], "Accra": ["Ghana"], "Tokyo": ["Japan"], "Beijing": ["China"],
        "Seoul": ["South Korea"], "Pyongyang": ["North Korea"], "Bangkok": ["Thailand"],
        "Hanoi": ["Vietnam"], "Jakarta": ["Indonesia"], "Manila": ["the Philippines"],
        "Islamabad": ["Pakistan"], "Dhaka": ["Bangladesh"], "Tehran": ["Iran"],
        "Baghdad": ["Iraq"], "Damascus": ["Syria"], "Beirut": ["Lebanon"], "Amman": ["Jordan"],
        "Riyadh": ["Saudi Arabia"], "Kabul": ["Afghanistan"], "Kathmandu": ["Nepal"],
        "Ottawa": ["Canada"], "Havana": ["Cuba"], "Santiago": ["Chile"], "Lima": ["Peru"],
        "Caracas": ["Venezuela"], "Quito": ["Ecuador"], "Montevideo": ["Uruguay"],
        "Canberra": ["Australia"], "Wellington": ["New Zealand"], "Doha": ["Qatar"],
        "Muscat": ["Oman"], "Tallinn": ["Estonia"], "Riga": ["Latvia"], "Vilnius": ["Lithuania"],
        "Bratislava": ["Slovakia"], "Ljubljana": ["Slovenia"], "Tirana": ["Albania"],
        "Nicosia": ["Cyprus"], "Valletta": ["Malta"], "Edinburgh": ["Scotland"],
        "Cardiff": ["Wales"], "Harare": ["Zimbabwe"], "Kampala": ["Uganda"], "Dakar": ["Senegal"],
        "Khartoum": ["Sudan"], "Tripoli": ["Libya"], "Luanda": ["Angola"], "Yerevan": ["Armenia"],
        "Baku": ["Azerbaijan"], "Tashkent": ["Uzbekistan"], "Kingston": ["Jamaica"],
        "Lusaka": ["Zambia"], "Maputo": ["Mozambique"], "Kigali": ["Rwanda"],
        "Mogadishu": ["Somalia"], "Bamako": ["Mali"], "Managua": ["Nicaragua"],
    },
    "city_country": {
        "France": ["Lyon", "Marseille", "Toulouse", "Nice", "Bordeaux", "Lille", "Strasbourg",
                   "Nantes"],
        "Germany": ["Munich", "Hamburg", "Frankfurt", "Cologne", "Stuttgart", "Dresden", "Leipzig",
                    "Düsseldorf"],
        "Italy": ["Milan", "Naples", "Venice", "Florence", "Turin", "Bologna", "Genoa", "Palermo"],
        "Spain": ["Barcelona", "Seville", "Bilbao", "Malaga", "Zaragoza"],
        "Japan": ["Osaka", "Kyoto", "Yokohama", "Nagoya", "Sapporo", "Hiroshima", "Kobe",
                  "Fukuoka"],
        "China": ["Shanghai", "Guangzhou", "Shenzhen", "Chengdu", "Wuhan", "Nanjing", "Tianjin"],
        "India": ["Mumbai", "Bangalore", "Chennai", "Kolkata", "Pune", "Jaipur", "Ahmedabad"],
        "Canada": ["Toronto", "Vancouver", "Montreal", "Calgary", "Edmonton", "Winnipeg"],
        "Australia": ["Sydney", "Melbourne", "Brisbane", "Adelaide"],
        "Brazil": ["Rio de Janeiro", "São Paulo", "Recife"],
        "Russia": ["Kazan", "Novosibirsk", "Yekaterinburg", "Vladivostok", "Sochi"],
        "Turkey": ["Istanbul", "Izmir", "Antalya", "Bursa"],
        "Poland": ["Krakow", "Gdansk", "Wroclaw", "Poznan"],
        "England": ["Manchester", "Liverpool", "Leeds", "Bristol", "Sheffield"],
        "Scotland": ["Glasgow", "Aberdeen", "Dundee"],
        "Mexico": ["Monterrey", "Tijuana", "Cancun", "Acapulco"],
        "Egypt": ["Luxor", "Aswan"],
        "Morocco": ["Casablanca", "Marrakesh", "Fez", "Tangier"],
        "Switzerland": ["Zurich", "Geneva", "Basel", "Lausanne"],
        "Austria": ["Salzburg", "Innsbruck", "Graz"],
        "Greece": ["Thessaloniki"],
        "Portugal": ["Porto"],
        "Pakistan": ["Karachi", "Lahore"],
        "Argentina": ["Rosario", "Mendoza"],
        "Sweden": ["Gothenburg", "Malmo"],
        "Norway": ["Bergen"],
        "Ireland": ["Galway"],
        "Belgium": ["Antwerp", "Ghent", "Bruges"],
    },
    "landmark_city": {
        "Paris": ["Eiffel Tower", "Louvre", "Arc de Triomphe", "Notre-Dame Cathedral"],
        "Rome": ["Colosseum", "Trevi Fountain", "Roman Forum"],
        "London": ["Big Ben", "Tower Bridge", "Buckingham Palace", "Westminster Abbey",
                   "Tower of London", "London Eye"],
        "Berlin": ["Brandenburg Gate", "Reichstag building", "Checkpoint Charlie"],
        "Barcelona": ["Sagrada Familia", "Park Güell", "Camp Nou stadium"],
        "Madrid": ["Prado Museum", "Royal Palace of Madrid"],
        "Moscow": ["Kremlin", "Red Square", "Saint Basil's Cathedral"],
        "Beijing": ["Forbidden City", "Tiananmen Square", "Temple of Heaven"],
        "Athens": ["Acropolis", "Parthenon"],
        "Istanbul": ["Hagia Sophia", "Blue Mosque", "Grand Bazaar"],
        "Venice": ["Rialto Bridge", "St. Mark's Basilica", "Doge's Palace"],
        "Florence": ["Uffizi Gallery", "Ponte Vecchio"],
        "Pisa": ["Leaning Tower of Pisa"],
        "Prague": ["Charles Bridge", "Prague Castle"],
        "Sydney": ["Sydney Opera House", "Sydney Harbour Bridge"],
        "Dubai": ["Burj Khalifa", "Burj Al Arab"],
        "Seattle": ["Space Needle"],
        "Chicago": ["Willis Tower", "Wrigley Field"],
        "Toronto": ["CN Tower"],
        "Tokyo": ["Tokyo Tower", "Senso-ji temple", "Tokyo Skytree"],
        "Kyoto": ["Kinkaku-ji temple", "Fushimi Inari shrine"],
        "Amsterdam": ["Rijksmuseum", "Anne Frank House", "Van Gogh Museum"],
        "Vienna": ["Schönbrunn Palace", "Hofburg Palace"],
        "Copenhagen": ["Little Mermaid statue", "Tivoli Gardens"],
        "Brussels": ["Atomium", "Manneken Pis"],
        "Edinburgh": ["Edinburgh Castle"],
        "Cologne": ["Cologne Cathedral"],
        "Munich": ["Allianz Arena"],
        "Manchester": ["Old Trafford stadium"],
        "Liverpool": ["Anfield stadium"],
        "Jerusalem": ["Western Wall", "Dome of the Rock"],
        "Washington": ["White House", "Lincoln Memorial", "Washington Monument"],
        "Philadelphia": ["Liberty Bell", "Independence Hall"],
        "Shanghai": ["Oriental Pearl Tower"],
        "Singapore": ["Marina Bay Sands"],
        "Bangkok": ["Grand Palace of Thailand", "Wat Arun temple"],
        "Mumbai": ["Gateway of India"],
        "Granada": ["Alhambra"],
        "Rio": ["Christ the Redeemer statue"],
        "Cairo": ["Egyptian Museum"],
    },
    "company_country": {
        "Japan": ["Toyota", "Sony", "Honda", "Nintendo", "Nissan", "Panasonic", "Toshiba", "Canon",
                  "Nikon", "Mitsubishi", "Yamaha", "Suzuki", "Mazda", "Subaru", "Hitachi"],
        "Germany": ["Volkswagen", "BMW", "Siemens", "Adidas", "SAP", "Bosch", "Mercedes-Benz",
                    "Porsche", "Audi", "Lufthansa", "Bayer", "Puma"],
        "China": ["Huawei", "Alibaba", "Tencent", "Lenovo", "Xiaomi", "Baidu"],
        "Sweden": ["IKEA", "Volvo", "Ericsson", "Spotify", "Electrolux"],
        "Italy": ["Ferrari", "Fiat", "Gucci", "Prada", "Lamborghini", "Pirelli"],
        "France": ["Renault", "Peugeot", "Michelin", "Danone", "Citroën"],
        "Switzerland": ["Nestlé", "Rolex", "Novartis", "Roche", "Swatch"],
        "Finland": ["Nokia"],
        "Denmark": ["LEGO", "Maersk", "Carlsberg"],
        "Netherlands": ["Philips", "Heineken"],
        "India": ["Infosys", "Wipro"],
        "Canada": ["Bombardier", "BlackBerry"],
    },
    "language": {
        "French": ["France", "Senegal"],
        "German": ["Germany", "Austria"],
        "Spanish": ["Spain", "Mexico", "Argentina", "Colombia", "Chile", "Venezuela", "Cuba",
                    "Uruguay", "Guatemala", "Honduras"],
        "Portuguese": ["Portugal", "Brazil", "Angola", "Mozambique"],
        "Italian": ["Italy"],
        "Russian": ["Russia"],
        "Japanese": ["Japan"],
        "Arabic": ["Egypt", "Saudi Arabia", "Syria", "Jordan", "Libya", "Yemen", "Oman",
                   "Kuwait", "Qatar", "Tunisia"],
        "Dutch": ["the Netherlands"],
        "Swedish": ["Sweden"],
        "Greek": ["Greece"],
        "Turkish": ["Turkey"],
        "Polish": ["Poland"],
        "Korean": ["South Korea", "North Korea"],
        "Hungarian": ["Hungary"],
        "Norwegian": ["Norway"],
        "Danish": ["Denmark"],
        "Czech": ["the Czech Republic"],
        "Hebrew": ["Israel"],
        "Persian": ["Iran"],
        "Thai": ["Thailand"],
        "Vietnamese": ["Vietnam"],
        "Indonesian": ["Indonesia"],
        "Romanian": ["Romania"],
        "Ukrainian": ["Ukraine"],
    },
    "continent": {
        "Europe": ["France", "Germany", "Italy", "Spain", "Portugal", "Poland", "Sweden", "Norway",
                   "Finland", "Denmark", "Austria", "Switzerland", "Belgium", "Greece", "Hungary",
                   "Romania", "Ireland", "Croatia", "Serbia", "Bulgaria"],
        "Asia": ["Japan", "China", "India", "Thailand", "Vietnam", "South Korea", "Indonesia",
                 "Malaysia", "Pakistan", "Bangladesh", "Nepal", "Mongolia", "Cambodia", "Laos",
                 "Afghanistan", "Iran", "Iraq", "Saudi Arabia", "Uzbekistan", "Sri Lanka",
                 "Myanmar"],
        "Africa": ["Nigeria", "Kenya", "Ethiopia", "Ghana", "Senegal", "Morocco", "Algeria",
                   "Tunisia", "Libya", "Sudan", "Somalia", "Uganda", "Tanzania", "Zambia",
                   "Zimbabwe", "Angola", "Mozambique", "Namibia", "Botswana", "Cameroon", "Mali",
                   "Chad", "Rwanda", "Madagascar"],
    },
    "currency": {
        "euro": ["France", "Germany", "Italy", "Spain", "Portugal", "the Netherlands", "Belgium",
                 "Austria", "Ireland", "Finland", "Greece", "Croatia", "Slovakia", "Slovenia",
                 "Estonia", "Latvia", "Lithuania", "Luxembourg", "Malta", "Cyprus"],
        "dollar": ["the United States", "Canada", "Australia", "New Zealand", "Singapore",
                   "Jamaica"],
        "peso": ["Mexico", "Argentina", "Chile", "Colombia", "the Philippines", "Cuba", "Uruguay"],
        "rupee": ["India", "Pakistan", "Nepal", "Sri Lanka"],
        "pound": ["the United Kingdom", "Egypt", "Lebanon", "Syria"],
        "yen": ["Japan"],
        "yuan": ["China"],
        "won": ["South Korea", "North Korea"],
        "ruble": ["Russia", "Belarus"],
        "franc": ["Switzerland"],
        "krona": ["Sweden", "Iceland"],
        "krone": ["Norway", "Denmark"],
        "real": ["Brazil"],
        "lira": ["Turkey"],
        "rand": ["South Africa"],
        "zloty": ["Poland"],
        "forint": ["Hungary"],
        "dinar": ["Iraq", "Jordan", "Kuwait", "Algeria", "Tunisia", "Serbia"],
        "riyal": ["Saudi Arabia", "Qatar"],
        "dirham": ["the United Arab Emirates", "Morocco"],
        "shekel": ["Israel"],
        "baht": ["Thailand"],
        "dong": ["Vietnam"],
        "rupiah": ["Indonesia"],
        "ringgit": ["Malaysia"],
    },
    "element_state": {
        "gas": ["hydrogen", "helium", "nitrogen", "oxygen", "fluorine", "neon", "chlorine",
                "argon", "krypton", "xenon", "radon"],
        "liquid": ["mercury", "bromine"],
        "solid": ["iron", "gold", "silver", "copper", "lead", "zinc", "tin", "aluminum", "carbon",
                  "sulfur", "iodine", "sodium", "potassium", "calcium", "magnesium", "silicon",
                  "nickel", "platinum", "uranium", "titanium"],
    },
    "element_symbol": {
        "H": ["hydrogen"], "He": ["helium"], "C": ["carbon"], "N": ["nitrogen"], "O": ["oxygen"],
        "Na": ["sodium"], "K": ["potassium"], "Fe": ["iron"], "Au": ["gold"], "Ag": ["silver"],
        "Cu": ["copper"], "Pb": ["lead"], "Hg": ["mercury"], "Sn": ["tin"], "Zn": ["zinc"],
        "Ca": ["calcium"], "Mg": ["magnesium"], "Ne": ["neon"], "Cl": ["chlorine"],
        "S": ["sulfur"], "P": ["phosphorus"], "Si": ["silicon"], "Al": ["aluminum"],
        "U": ["uranium"], "Ni": ["nickel"], "Pt": ["platinum"], "F": ["fluorine"],
        "I": ["iodine"], "Ar": ["argon"], "W": ["tungsten"], "Ti": ["titanium"],
        "Li": ["lithium"],
    },
    "animal_class": {
        "mammal": ["dog", "cat", "horse", "cow", "lion", "tiger", "elephant", "whale", "dolphin",
                   "bat", "bear", "wolf", "monkey", "rabbit", "giraffe", "kangaroo", "mouse",
                   "pig", "sheep", "goat", "deer", "fox", "zebra"],
        "bird": ["eagle", "sparrow", "parrot", "penguin", "owl", "pigeon", "crow", "ostrich",
                 "flamingo", "swan", "duck", "chicken", "hawk", "robin", "peacock"],
        "fish": ["shark", "salmon", "tuna", "trout", "cod", "goldfish", "carp", "catfish"],
        "reptile": ["snake", "lizard", "crocodile", "turtle", "alligator", "iguana", "tortoise",
                    "gecko", "cobra", "chameleon"],
        "insect": ["ant", "bee", "butterfly", "mosquito", "beetle", "grasshopper", "wasp",
                   "cockroach", "dragonfly", "moth", "ladybug"],
        "amphibian": ["frog", "toad", "salamander", "newt"],
    },
    "opposite": {
        "cold": ["hot"], "hot": ["cold"], "down": ["up"], "up": ["down"], "small": ["big"],
        "big": ["small"], "white": ["black"], "black": ["white"], "night": ["day"],
        "day": ["night"], "right": ["left"], "left": ["right"], "no": ["yes"], "yes": ["no"],
        "closed": ["open"], "slow": ["fast"], "fast": ["slow"], "sad": ["happy"],
        "happy": ["sad"], "bad": ["good"], "good": ["bad"], "dark": ["light"],
        "poor": ["rich"], "rich": ["poor"], "late": ["early"], "early": ["late"], "low": ["high"],
        "high": ["low"], "soft": ["hard"], "hard": ["soft"], "dry": ["wet"], "wet": ["dry"],
        "false": ["true"], "true": ["false"], "south": ["north"], "north": ["south"],
        "west": ["east"], "east": ["west"], "weak": ["strong"], "strong": ["weak"],
        "empty": ["full"], "full": ["empty"], "hate": ["love"], "love": ["hate"],
        "lose": ["win"], "sell": ["buy"], "buy": ["sell"], "pull": ["push"], "push": ["pull"],
        "outside": ["inside"], "inside": ["outside"], "bottom": ["top"], "top": ["bottom"],
        "thin": ["thick"], "thick": ["thin"], "dirty": ["clean"], "clean": ["dirty"],
        "quiet": ["loud"], "loud": ["quiet"], "old": ["new"], "last": ["first"],
        "enemy": ["friend"], "peace": ["war"], "war": ["peace"], "dead": ["alive"],
        "alive": ["dead"], "expensive": ["cheap"], "cheap": ["expensive"], "female": ["male"],
        "male": ["female"], "negative": ["positive"], "positive": ["negative"],
        "sunset": ["sunrise"], "sunrise": ["sunset"],
    },
    "dish_country": {
        "Japan": ["Sushi", "Ramen", "Tempura", "Sashimi", "Miso soup"],
        "Italy": ["Pizza", "Pasta carbonara", "Risotto", "Lasagna", "Tiramisu", "Gnocchi",
                  "Gelato"],
        "Spain": ["Paella", "Gazpacho", "Tapas", "Churros"],
        "France": ["Ratatouille", "Quiche", "Crème brûlée", "Coq au vin"],
        "Mexico": ["Tacos", "Burritos", "Guacamole", "Enchiladas", "Quesadillas"],
        "Korea": ["Kimchi", "Bibimbap", "Bulgogi"],
        "India": ["Biryani", "Tandoori chicken", "Butter chicken"],
        "Hungary": ["Goulash"],
        "Austria": ["Wiener schnitzel", "Sachertorte"],
        "Germany": ["Sauerkraut", "Bratwurst"],
        "Scotland": ["Haggis"],
        "Greece": ["Moussaka", "Souvlaki", "Tzatziki"],
        "Vietnam": ["Pho", "Banh mi"],
        "Thailand": ["Pad thai", "Tom yum soup", "Green curry"],
        "Peru": ["Ceviche"],
        "Brazil": ["Feijoada"],
        "Canada": ["Poutine"],
        "Poland": ["Pierogi"],
        "Switzerland": ["Fondue", "Raclette", "Rösti"],
        "Russia": ["Beef stroganoff", "Blini"],
        "China": ["Peking duck", "Kung pao chicken", "Mapo tofu", "Dim sum"],
        "Turkey": ["Doner kebab"],
    },
}

FACTS: list[Fact] = [
    Fact(subject, relation, " " + attribute)
    for relation, by_attribute in _TABLE.items()
    for attribute, subjects in by_attribute.items()
    for subject in subjects
]


def facts_for(relation: str) -> list[Fact]:
    """All built-in facts of one relation."""
    if relation not in RELATIONS:
        hint = closest(relation, RELATIONS)
        raise UncoverError(
            f"unknown relation {relation!r}; choose one of {sorted(RELATIONS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    return [f for f in FACTS if f.relation == relation]


def attribute_token(model: "Model", fact: Fact) -> int | None:
    """The attribute's token id for this model's tokenizer, or None when it is not one token."""
    ids = model.tokenizer.encode(fact.attribute, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


@torch.no_grad()
def predict_next(model: "Model", prompts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Next-token probabilities after each prompt: [len(prompts), d_vocab] (batched, left-padded)."""
    out = []
    for start in range(0, len(prompts), batch_size):
        tokens, mask = model.to_tokens(list(prompts[start:start + batch_size]), return_mask=True)
        logits = model(tokens.to(model.device), attention_mask=mask.to(model.device), logits_to_keep=1)
        out.append(logits[:, -1].float().softmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.d_vocab)


def known_facts(model: "Model", facts: Sequence[Fact] | None = None, min_prob: float = 0.0,
                template: int = 0, batch_size: int = 64) -> list[Fact]:
    """Facts the model knows: the attribute is one token and the model's greedy next token.

    facts: candidates (default: every built-in fact); min_prob: the attribute's probability must
    also be at least this; template: which prompt template to test (0 = canonical).
    """
    candidates = list(FACTS if facts is None else facts)
    if not 0.0 <= min_prob <= 1.0:
        raise UncoverError(f"min_prob is a probability in [0, 1]; got {min_prob}")
    with_ids = [(f, attribute_token(model, f)) for f in candidates]
    with_ids = [(f, i) for f, i in with_ids if i is not None]
    if not with_ids:
        return []
    probs = predict_next(model, [f.prompt(template) for f, _ in with_ids], batch_size)
    greedy = probs.argmax(-1)
    return [
        f for row, (f, i) in enumerate(with_ids)
        if greedy[row].item() == i and probs[row, i].item() >= min_prob
    ]
