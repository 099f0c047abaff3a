"""The catalog: world-level parameters, unique model names, and items generated in per-day blocks.

Block 0 is the initial catalog (``n_items`` items created at ``start`` 00:00 UTC); block k >= 1 holds the
``new_items_per_day`` items created during day ``start + k``. Each block is drawn from its own seeded
generator, so any day can be generated without the days before it and in any call order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

from ml.sim.config import SimConfig
from ml.sim.vocab import (
    BRANDS,
    CATEGORIES,
    COLOR_ABBREVIATIONS,
    COLOR_SHADES,
    COLORS,
    DESCRIPTION_CLOSERS,
    DESCRIPTION_OPENERS,
    DISTRACTOR_TEMPLATES,
    MATERIALS,
    NAME_CONSONANTS,
    NAME_FINALS,
    NAME_VOWELS,
    SHOPPER_SENTENCES,
    THEME_SHOPPER_WORDS,
    THEMES,
    TITLE_TAGS,
)
from ml.text import tokenize

CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
THEME_NAMES: tuple[str, ...] = tuple(THEMES)
US_PER_DAY = 86_400_000_000

# Named generator streams: every random draw derives from (seed, stream, ...), never from global state.
STREAM_WORLD, STREAM_NAMES, STREAM_ITEMS, STREAM_USERS, STREAM_HEAD, STREAM_REQUESTS, STREAM_TEXT, STREAM_SHOPPER = \
    range(1, 9)

# Surface forms of a color in titles (``title_color_form``).
FORM_PLAIN, FORM_SHADE, FORM_CODE, FORM_TYPO = range(4)


def day_start_us(day: date) -> int:
    """Microseconds since the epoch at ``day`` 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def us_to_series(us: np.ndarray) -> pd.Series:
    """Epoch microseconds -> ``datetime64[us, UTC]`` series (the contract's timestamp type)."""
    return pd.Series(np.asarray(us, dtype="int64").astype("datetime64[us]")).dt.tz_localize("UTC")


@dataclass(frozen=True)
class World:
    """Item-independent parameters drawn once per seed."""

    brand_category: np.ndarray   # (brands, categories) weights: which brands sell which categories
    brand_tier: np.ndarray       # (brands,) price multiplier
    brand_quality: np.ndarray    # (brands,) quality offset
    brand_popularity: np.ndarray  # (brands,) share of shoppers who favour the brand
    category_weight: np.ndarray  # (categories,)
    category_color: np.ndarray   # (categories, colors)
    category_material: np.ndarray  # (categories, materials), zero outside the category's plausible set
    category_theme: np.ndarray   # (categories, themes)
    name_a: int                  # model-name permutation: index -> (a * index + b) mod NAME_SPACE
    name_b: int

    @classmethod
    def draw(cls, seed: int) -> World:
        rng = np.random.default_rng([seed, STREAM_WORLD])
        nb, nc, nt = len(BRANDS), len(CATEGORIES), len(THEMES)
        sells = np.zeros((nb, nc))
        for b in range(nb):  # each brand sells 3-5 categories
            cats = rng.choice(nc, size=int(rng.integers(3, 6)), replace=False)
            sells[b, cats] = rng.uniform(0.5, 1.5, size=len(cats))
        for c in range(nc):  # and every category has at least two brands
            while (sells[:, c] > 0).sum() < 2:
                sells[int(rng.integers(nb)), c] = rng.uniform(0.5, 1.5)
        material = np.zeros((nc, len(MATERIALS)))
        for c, (_, _, mats) in enumerate(CATEGORIES.values()):
            material[c, [MATERIALS.index(m) for m in mats]] = rng.dirichlet(np.full(len(mats), 2.0))
        a = int(rng.integers(NAME_SPACE // 3, NAME_SPACE))
        while math.gcd(a, NAME_SPACE) != 1:
            a += 1
        return cls(
            brand_category=sells,
            brand_tier=np.exp(rng.normal(0.0, 0.25, nb)),
            brand_quality=rng.normal(0.0, 0.08, nb),
            brand_popularity=rng.dirichlet(np.full(nb, 1.5)),
            category_weight=rng.dirichlet(np.full(nc, 8.0)),
            category_color=rng.dirichlet(np.full(len(COLORS), 1.5), size=nc),
            category_material=material,
            category_theme=rng.dirichlet(np.full(nt, 0.9), size=nc),
            name_a=a,
            name_b=int(rng.integers(NAME_SPACE)),
        )


_SYLLABLES = [c + v for c in NAME_CONSONANTS for v in NAME_VOWELS]
NAME_SPACE = len(_SYLLABLES) ** 3 * len(NAME_FINALS)
_RESERVED: frozenset[str] = frozenset(
    tok for words in (
        BRANDS, COLORS, MATERIALS, TITLE_TAGS, DESCRIPTION_OPENERS, DESCRIPTION_CLOSERS, CATEGORY_NAMES,
        *THEMES.values(), *THEME_SHOPPER_WORDS.values(), *COLOR_SHADES.values(), COLOR_ABBREVIATIONS.values(),
        DISTRACTOR_TEMPLATES, SHOPPER_SENTENCES,
    ) for w in words for tok in tokenize(w)
)


def model_name(world: World, index: int) -> str:
    """The unique made-up model name of item ``index`` (lowercase, stable under normalize_query).

    A bijection on [0, NAME_SPACE): items use indices below NAME_SPACE / 2; a name that collides with a
    vocabulary word is replaced by the name of ``index + NAME_SPACE / 2``, which no item uses.
    """
    for i in (index, index + NAME_SPACE // 2):
        x = (world.name_a * i + world.name_b) % NAME_SPACE
        x, final = divmod(x, len(NAME_FINALS))
        x, s3 = divmod(x, len(_SYLLABLES))
        s1, s2 = divmod(x, len(_SYLLABLES))
        name = _SYLLABLES[s1] + _SYLLABLES[s2] + _SYLLABLES[s3] + NAME_FINALS[final]
        if name not in _RESERVED:
            return name
    raise RuntimeError(f"no free model name for item {index}")  # unreachable for real vocabularies


def block_layout(cfg: SimConfig, block: int) -> tuple[int, int, date]:
    """(first item index, item count, creation day) of a block."""
    if block == 0:
        return 0, cfg.n_items, cfg.start
    first = cfg.n_items + (block - 1) * cfg.new_items_per_day
    return first, cfg.new_items_per_day, cfg.start + timedelta(block)


def generate_block(cfg: SimConfig, world: World, block: int) -> pd.DataFrame:
    """All true attributes of one block's items (one row per item, index-aligned with ``item_index``)."""
    first, n, day = block_layout(cfg, block)
    rng = np.random.default_rng([cfg.seed, STREAM_ITEMS, block])
    nc = len(CATEGORIES)
    cat = rng.choice(nc, size=n, p=world.category_weight)
    # conditional draws by inverse CDF over per-category weight rows (vectorized)
    brand = _choice_rows(rng, (world.brand_category * world.brand_popularity[:, None] ** 0.5).T[cat])
    color = _choice_rows(rng, world.category_color[cat])
    material = _choice_rows(rng, world.category_material[cat])
    theme = _choice_rows(rng, world.category_theme[cat])
    quality = np.clip(rng.beta(2.2, 2.2, n) + world.brand_quality[brand], 0.01, 0.99)
    base = np.array([v[1] for v in CATEGORIES.values()])[cat]
    raw_price = base * world.brand_tier[brand] * np.exp(rng.normal(0.0, 0.3, n)) * (0.6 + 0.8 * quality)
    price = np.maximum(np.round(raw_price) - 0.01, 0.99)
    popularity = np.exp(rng.normal(0.0, 1.0, n)) * (0.5 + quality)
    title_color = rng.random(n) < cfg.title_color_share
    tag = np.where(rng.random(n) < 0.3, rng.integers(len(TITLE_TAGS), size=n), -1)
    hidden = rng.random((n, 3)) < cfg.hidden_attribute_share
    if block == 0:
        created = np.full(n, day_start_us(day), dtype="int64")
    else:
        created = np.sort(day_start_us(day) + rng.integers(0, US_PER_DAY, size=n))
    n_desc = rng.integers(3, 5, size=n)
    desc_words = rng.random((n, len(next(iter(THEMES.values())))))
    opener = rng.integers(len(DESCRIPTION_OPENERS), size=n)
    closer = rng.integers(len(DESCRIPTION_CLOSERS), size=n)

    # Text noise comes from its own stream, so every attribute, query and grade is as without it.
    noise = np.random.default_rng([cfg.seed, STREAM_TEXT, block])
    form = np.where(~title_color | (noise.random(n) >= cfg.title_color_variant_share), FORM_PLAIN,
                    noise.choice([FORM_SHADE, FORM_CODE, FORM_TYPO], size=n, p=[0.6, 0.2, 0.2]))
    second = np.where(title_color & (noise.random(n) < cfg.title_second_color_share),
                      (color + noise.integers(1, len(COLORS), size=n)) % len(COLORS), -1)
    distractor = np.where(noise.random(n) < cfg.description_distractor_share,
                          (color + noise.integers(1, len(COLORS), size=n)) % len(COLORS), -1)
    distractor_shade = noise.random(n) < 0.25
    template = noise.integers(len(DISTRACTOR_TEMPLATES), size=n)
    pick, typo_pos, typo_kind = noise.random(n), noise.random(n), noise.integers(2, size=n)
    # A minority of descriptions also name one of the theme's shopper words (the words thematic queries use): a
    # stream of its own, so every other draw is as without it.
    shop = np.random.default_rng([cfg.seed, STREAM_SHOPPER, block])
    shopper_word = np.where(shop.random(n) < cfg.shopper_word_share,
                            shop.integers(len(next(iter(THEME_SHOPPER_WORDS.values()))), size=n), -1)
    shopper_sentence = shop.integers(len(SHOPPER_SENTENCES), size=n)

    names, titles, descriptions = [], [], []
    for j in range(n):
        name = model_name(world, first + j)
        words = [BRANDS[brand[j]], name.capitalize()]
        if tag[j] >= 0:
            words.append(TITLE_TAGS[tag[j]])
        if title_color[j]:
            shown = _color_surface(COLORS[color[j]], int(form[j]), pick[j], typo_pos[j], int(typo_kind[j]))
            words.append(shown if second[j] < 0 else f"{shown}/{COLORS[second[j]].capitalize()}")
        words.append(CATEGORIES[CATEGORY_NAMES[cat[j]]][0])
        vocab = THEMES[THEME_NAMES[theme[j]]]
        picked = [vocab[k] for k in np.argsort(desc_words[j])[: n_desc[j]]]
        listed = ", ".join(picked[:-1]) + " and " + picked[-1]
        sentences = [f"{DESCRIPTION_OPENERS[opener[j]]} {listed}.", DESCRIPTION_CLOSERS[closer[j]]]
        if distractor[j] >= 0:
            other = COLORS[distractor[j]]
            if distractor_shade[j]:
                shades = COLOR_SHADES[other]
                other = shades[min(int(pick[j] * len(shades)), len(shades) - 1)]
            sentences.insert(1, DISTRACTOR_TEMPLATES[template[j]].format(c=other))
        if shopper_word[j] >= 0:
            word = THEME_SHOPPER_WORDS[THEME_NAMES[theme[j]]][shopper_word[j]]
            sentences.insert(1, SHOPPER_SENTENCES[shopper_sentence[j]].format(w=word))
        names.append(name)
        titles.append(" ".join(words))
        descriptions.append(" ".join(sentences))

    return pd.DataFrame({
        "item_index": np.arange(first, first + n, dtype="int64"),
        "item_id": np.array([f"i{first + j:06d}" for j in range(n)], dtype=object),
        "model_name": np.array(names, dtype=object),
        "title": np.array(titles, dtype=object),
        "description": np.array(descriptions, dtype=object),
        "category_code": cat.astype("int16"),
        "brand_code": brand.astype("int16"),
        "color_code": color.astype("int16"),
        "material_code": material.astype("int16"),
        "theme_code": theme.astype("int16"),
        "price": price.astype("float64"),
        "quality": quality,
        "popularity": popularity,
        "title_has_color": title_color,
        "title_color_form": form.astype("int8"),
        "title_second_color_code": second.astype("int16"),
        "description_distractor_code": distractor.astype("int16"),
        "brand_hidden": hidden[:, 0],
        "color_hidden": hidden[:, 1],
        "material_hidden": hidden[:, 2],
        "created_us": created,
    })


def _color_surface(color: str, form: int, pick: float, pos: float, kind: int) -> str:
    """How a title spells ``color``: as is, a shade name, a feed code, or a one-letter typo (Title Case)."""
    if form == FORM_SHADE:
        shades = COLOR_SHADES[color]
        return shades[min(int(pick * len(shades)), len(shades) - 1)].title()
    if form == FORM_CODE and color in COLOR_ABBREVIATIONS:
        return COLOR_ABBREVIATIONS[color]
    if form in (FORM_CODE, FORM_TYPO):
        # drop a letter (kind 0) or swap two adjacent letters (kind 1), never the first letter
        i = 1 + min(int(pos * (len(color) - 2)), len(color) - 3)
        typo = color[:i] + color[i + 1:] if kind == 0 else color[:i] + color[i + 1] + color[i] + color[i + 2:]
        if typo != color and typo not in COLORS:
            return typo.capitalize()
    return color.capitalize()


def _choice_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``weights`` (rows need not be normalized)."""
    cdf = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), weights.shape[1] - 1)


def true_frame(items: pd.DataFrame) -> pd.DataFrame:
    """The public view of the true items: decoded attribute names, ``created_at`` as a UTC timestamp."""
    return pd.DataFrame({
        "item_id": items["item_id"].to_numpy(),
        "title": items["title"].to_numpy(),
        "description": items["description"].to_numpy(),
        "category": np.array(CATEGORY_NAMES, dtype=object)[items["category_code"].to_numpy()],
        "brand": np.array(BRANDS, dtype=object)[items["brand_code"].to_numpy()],
        "color": np.array(COLORS, dtype=object)[items["color_code"].to_numpy()],
        "material": np.array(MATERIALS, dtype=object)[items["material_code"].to_numpy()],
        "price": items["price"].to_numpy(),
        "quality": items["quality"].to_numpy(),
        "theme": np.array(THEME_NAMES, dtype=object)[items["theme_code"].to_numpy()],
        "popularity": items["popularity"].to_numpy(),
        "model_name": items["model_name"].to_numpy(),
        "title_has_color": items["title_has_color"].to_numpy(),
        "brand_hidden": items["brand_hidden"].to_numpy(),
        "color_hidden": items["color_hidden"].to_numpy(),
        "material_hidden": items["material_hidden"].to_numpy(),
        "created_at": us_to_series(items["created_us"].to_numpy()),
    })


def catalog_frame(items: pd.DataFrame) -> pd.DataFrame:
    """Rows in the ``catalog`` schema: hidden attributes are None (the title may still mention them)."""
    true = true_frame(items)
    out = pd.DataFrame({
        "event_id": ("catalog:" + true["item_id"]).to_numpy(),
        "item_id": true["item_id"].to_numpy(),
        "title": true["title"].to_numpy(),
        "description": true["description"].to_numpy(),
        "category": true["category"].to_numpy(),
    })
    for attr in ("brand", "color", "material"):
        out[attr] = true[attr].where(~true[f"{attr}_hidden"], None).to_numpy()
    out["price"] = true["price"].to_numpy()
    out["created_at"] = true["created_at"]
    return out
