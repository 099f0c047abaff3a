"""The simulated world's fixed vocabulary: categories, brands, colors, materials, themes, head queries.

Every word is stable under ``ml.text.normalize_query`` (no trailing plural ``s``), except the category names,
which are plurals whose normalized form equals the normalized title noun ("bottles" and "Bottle" both
normalize to "bottle"). Vocabularies are pairwise disjoint, so a query's tokens say which kind of query it is.
"""

from __future__ import annotations

# category (catalog value, the plural a shopper types) -> (title noun, base price, plausible materials)
CATEGORIES: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "shoes": ("Shoes", 85.0, ("leather", "cotton", "nylon", "denim")),
    "jackets": ("Jacket", 130.0, ("leather", "wool", "nylon", "denim", "cotton")),
    "bags": ("Bag", 60.0, ("leather", "cotton", "nylon", "denim")),
    "backpacks": ("Backpack", 75.0, ("nylon", "leather", "cotton")),
    "lamps": ("Lamp", 45.0, ("steel", "ceramic", "bamboo")),
    "mugs": ("Mug", 16.0, ("ceramic", "steel", "bamboo")),
    "bottles": ("Bottle", 24.0, ("steel", "bamboo", "ceramic")),
    "chairs": ("Chair", 150.0, ("bamboo", "steel", "leather", "wool")),
    "blankets": ("Blanket", 55.0, ("wool", "cotton", "nylon")),
    "headphones": ("Headphones", 95.0, ("steel", "leather", "nylon")),
}

BRANDS: tuple[str, ...] = (
    "Arvella", "Brisko", "Corvane", "Dunmere", "Elvaro", "Fjordal", "Halvik", "Isoko", "Jorvale",
    "Kestrine", "Lumeno", "Marlowe", "Nordhavn", "Orvieta", "Pavero", "Quillon", "Rosmund", "Sablo",
    "Tervani", "Umbrio", "Valtor", "Wrenfield", "Xandor", "Zephyro", "Gildane",
)

COLORS: tuple[str, ...] = (
    "red", "blue", "green", "black", "white", "grey", "yellow", "orange", "purple", "brown",
)

# Catalog color noise (see ml/sim/__init__.py "Text noise"). Merchants name shades rather than base colors,
# and normalize shade names to base colors inconsistently: the same shade word is filed under two or three
# base colors by different sellers (burgundy: red or purple; teal: blue or green; slate: blue or grey; khaki:
# green or brown; cream: white or yellow; coral: red or orange; rust: red, orange or brown; mustard: yellow
# or brown; midnight: black or blue). Some shade phrases keep the base word ("navy blue"), most do not.
COLOR_SHADES: dict[str, tuple[str, ...]] = {
    "red": ("crimson", "burgundy", "maroon", "scarlet", "cherry red", "wine", "coral", "rust"),
    "blue": ("navy", "navy blue", "cobalt", "sky blue", "teal", "slate", "indigo", "midnight"),
    "green": ("olive", "sage", "emerald", "mint green", "teal", "khaki"),
    "black": ("jet black", "onyx", "ebony", "midnight"),
    "white": ("off-white", "ivory", "cream", "snow white", "pearl"),
    "grey": ("charcoal", "slate", "heather grey", "ash", "silver", "stone"),
    "yellow": ("mustard", "lemon", "canary yellow", "cream", "gold"),
    "orange": ("tangerine", "burnt orange", "coral", "rust", "amber"),
    "purple": ("plum", "lilac", "violet", "lavender", "burgundy", "mauve"),
    "brown": ("tan", "chocolate", "cognac", "camel", "khaki", "mustard", "rust", "taupe"),
}
# Feed-style color codes (the colors without a customary code are misspelled instead).
COLOR_ABBREVIATIONS: dict[str, str] = {
    "black": "BLK", "white": "WHT", "grey": "GRY", "brown": "BRN", "green": "GRN", "blue": "BLU",
    "yellow": "YLW", "purple": "PRPL", "orange": "ORG",
}
# Description sentences that name a color which is NOT the item's (an accessory, a styling tip, the photo).
DISTRACTOR_TEMPLATES: tuple[str, ...] = (
    "Pairs well with {c} jeans.", "Comes with a {c} pouch.", "Shown with a {c} strap.",
    "Photographed against a {c} backdrop.", "Looks sharp next to {c} sneakers.", "Stitched with {c} thread.",
    "Also offered as a {c} version.", "Matches a {c} scarf.",
)

MATERIALS: tuple[str, ...] = ("leather", "cotton", "wool", "steel", "ceramic", "denim", "bamboo", "nylon")

# theme -> its catalog vocabulary. Descriptions use 3-4 of a theme's words; queries use THEME_SHOPPER_WORDS.
THEMES: dict[str, tuple[str, ...]] = {
    "outdoor": ("hiking", "trail", "camping", "mountain", "campfire", "rugged", "wilderness", "summit",
                "forest", "adventure", "backcountry"),
    "office": ("desk", "meeting", "workday", "productivity", "professional", "workspace", "agenda",
               "deadline", "boardroom", "commute", "career"),
    "party": ("celebration", "festive", "dance", "cocktail", "glitter", "birthday", "nightlife", "disco",
              "confetti", "sparkle", "karaoke"),
    "travel": ("journey", "airport", "passport", "vacation", "wanderlust", "roadtrip", "explore", "jetlag",
               "voyage", "sightseeing", "layover"),
    "fitness": ("workout", "gym", "running", "training", "yoga", "cardio", "marathon", "sweat", "strength",
                "stretch", "treadmill"),
    "home": ("cozy", "living", "comfort", "family", "relax", "sofa", "hearth", "decor", "lounge", "sunday",
             "nesting"),
    "kitchen": ("cooking", "recipe", "chef", "baking", "brunch", "espresso", "pantry", "dinner", "foodie",
                "barista", "grill"),
    "garden": ("garden", "plant", "bloom", "patio", "backyard", "greenhouse", "seedling", "flower", "soil",
               "harvest", "sunshine"),
}

# theme -> the words shoppers type for it (thematic queries use two of them). They name the people and occasions a
# theme is for, where the catalog's THEMES words describe the products: a vocabulary mismatch. Only a minority of
# descriptions (``SimConfig.shopper_word_share``) mention one, next to the catalog words, so BM25 finds a few of a
# theme's items for such a query, while embeddings learned from text co-occurrence reach the whole theme.
THEME_SHOPPER_WORDS: dict[str, tuple[str, ...]] = {
    "outdoor": ("hiker", "camper", "climber", "outdoorsy", "trekker", "bushcraft", "angler", "mountaineer",
                "backpacker", "scout", "naturalist"),
    "office": ("coworker", "boss", "intern", "manager", "freelancer", "entrepreneur", "executive", "accountant",
               "hustle", "startup", "telecommuter"),
    "party": ("partygoer", "host", "bachelorette", "prom", "clubbing", "reveler", "dj", "newyear", "gala",
              "fiesta", "nightowl"),
    "travel": ("traveler", "globetrotter", "nomad", "tourist", "jetsetter", "cruise", "honeymoon", "weekender",
               "flyer", "roamer", "hostel"),
    "fitness": ("athlete", "runner", "lifter", "yogi", "cyclist", "triathlete", "bodybuilder", "sprinter",
                "crossfit", "jogger", "swimmer"),
    "home": ("homebody", "homeowner", "housewarming", "newlywed", "hygge", "houseguest", "roommate", "landlord",
             "renter", "snuggle", "introvert"),
    "kitchen": ("cook", "baker", "gourmet", "sommelier", "epicure", "caterer", "griller", "brewer", "mixologist",
                "homecook", "pastry"),
    "garden": ("gardener", "florist", "landscaper", "botanist", "grower", "composter", "beekeeper", "allotment",
               "orchard", "horticulture", "greenthumb"),
}
# The description sentence that mentions a shopper word ({w}).
SHOPPER_SENTENCES: tuple[str, ...] = (
    "Sure to please every {w}.", "Reviewers say any {w} will want one.", "Our {w} testers kept theirs.",
    "Every {w} we asked kept one.",
)

# Optional title tags (after the model name); never informative about relevance.
TITLE_TAGS: tuple[str, ...] = ("Pro", "Lite", "Classic", "Plus", "Mini", "Max", "Edge", "Core")

DESCRIPTION_OPENERS: tuple[str, ...] = (
    "Made for", "Perfect for", "Built for", "Designed for", "Ideal for", "Great for", "Chosen for",
)
DESCRIPTION_CLOSERS: tuple[str, ...] = (
    "Crafted to last.", "Simple and durable.", "Finished with care.", "A reliable everyday companion.",
    "Easy to clean and store.", "Light, sturdy and well made.", "Backed by a two year warranty.",
    "Thoughtful details throughout.",
)

# Thematic query templates ({a}, {b}: two of one theme's shopper words, ``THEME_SHOPPER_WORDS``).
THEMATIC_TEMPLATES: tuple[str, ...] = (
    "gifts for {a} {b} lovers", "{a} and {b} ideas", "{a} {b} essentials", "something for {a} and {b}",
    "best picks for {a} {b}", "{a} {b}",
)

# How shoppers phrase the same exact query ({b} brand, {m} model name, {n} the category's title noun) and the same
# attribute query ({c} color, {t} material or nothing, {g} category), with their shares: a memory of exact query
# strings has to learn each phrasing separately, query understanding and BM25 do not care about word order.
EXACT_PHRASINGS: tuple[tuple[str, float], ...] = (
    ("{b} {m}", 0.4), ("{m} {b}", 0.2), ("{b} {m} {n}", 0.2), ("{m} {n}", 0.2),
)
ATTRIBUTE_PHRASINGS: tuple[tuple[str, float], ...] = (("{c} {t} {g}", 0.4), ("{g} {c} {t}", 0.3), ("{t} {c} {g}", 0.3))

# Popular short queries; each maps to a latent item set that only interactions reveal.
HEAD_QUERIES: tuple[str, ...] = (
    "deals", "bestsellers", "new arrivals", "gift ideas", "sale", "trending", "top rated", "clearance",
    "staff picks", "under 50", "best value", "popular", "limited edition", "final call", "flash sale",
    "weekly deals", "hot items", "editors choice", "most loved", "customer favorites", "just dropped",
    "exclusive", "bundles", "seasonal picks", "must haves", "viral", "budget finds", "luxury",
    "back in stock", "spring collection", "winter sale", "holiday gifts", "stocking stuffers", "outlet",
    "free shipping", "top picks", "under 20", "new season", "bargains", "award winners",
    "members only", "daily drop", "price drop", "hidden gems", "shop the look",
)

# Hour-of-day (UTC) request intensity: quiet nights, a lunch bump and an evening peak.
HOUR_WEIGHTS: tuple[float, ...] = (
    0.5, 0.3, 0.2, 0.2, 0.2, 0.3, 0.6, 1.0, 1.4, 1.6, 1.7, 1.9,
    2.1, 2.0, 1.8, 1.7, 1.7, 1.9, 2.3, 2.6, 2.6, 2.2, 1.6, 1.0,
)

LOCALES: tuple[str, ...] = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "nl-NL")
LOCALE_WEIGHTS: tuple[float, ...] = (0.45, 0.15, 0.15, 0.1, 0.1, 0.05)
DEVICE_WEIGHTS: tuple[float, ...] = (0.4, 0.45, 0.15)  # desktop, mobile, app (ml.events.schema.DEVICES order)

# Model names: three consonant-vowel syllables and an optional final consonant (never "s", so the naive
# plural stripping of normalize_query leaves them intact).
NAME_CONSONANTS = "bdfgklmnprtvz"
NAME_VOWELS = "aeiou"
NAME_FINALS = ("", "n", "r", "l")
