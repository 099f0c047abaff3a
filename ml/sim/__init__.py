"""A seeded, deterministic store-search world with ground truth: it drives the demo and every benchmark.

``Simulator(SimConfig(...))`` produces raw events in the contract of ``ml/events/schema.py``:
``catalog_events(day)``, ``requests(day)`` (plus a ground-truth ``query_type`` column to drop before
writing), and ``respond(requests, impressions)`` -> engagements. ``oracle`` knows what every query means
and how relevant every item is; ``true_items()`` and ``users()`` expose the latent world.

The world
---------
Catalog. 10 categories (shoes, jackets, bags, backpacks, lamps, mugs, bottles, chairs, blankets,
headphones), 25 invented brands (each sells 3-5 categories), 10 colors, 8 materials (each category has 3-5
plausible ones), a price (category base x brand tier x noise x quality), a latent quality in (0, 1), a
latent popularity, and a latent theme among outdoor, office, party, travel, fitness, home, kitchen, garden.
Titles read ``{Brand} {Model} [{Tag}] [{Color}] {Noun}``: the model name is a unique made-up word per item,
the color appears in 60% of titles (not always spelled plainly, see Text noise), the material never.
Descriptions use 3-4 of the item's theme's 11 catalog words plus filler, never a material nor the item's own color
(sometimes another color); a ``shopper_word_share`` (15%) of them also name one of the theme's 11 shopper words
(``vocab.THEME_SHOPPER_WORDS``: "hiker", "coworker", "partygoer": who the product is for, where the catalog words
describe the product) in one extra sentence ("Every hiker we asked kept one."). The initial catalog (``n_items``) is created at ``start`` 00:00
UTC; ``new_items_per_day`` cold-start items arrive during each later day. Each of brand, color and material
is hidden (None in the catalog events) for a ``hidden_attribute_share`` of items; the truth stays in
``true_items()``.

Text noise (as real catalogs have; rates are ``SimConfig`` fields, drawn from a stream of their own so that no
attribute, query or relevance grade depends on them):

* color spelling (``title_color_variant_share``, 20% of color-mentioning titles, ~12% of items): 60% of these
  use a shade name (``vocab.COLOR_SHADES``: "Crimson", "Navy Blue", "Charcoal", "Off-White"), several of
  which are filed under two or three base colors across items, as merchants map shades inconsistently
  ("Burgundy" is red or purple, "Teal" blue or green, "Khaki" green or brown, "Rust" red, orange or brown);
  20% a feed code ("BLK", "WHT", "GRY"; red has none and is misspelled instead); 20% a one-letter typo
  ("Balck", "Yelow": a dropped or swapped letter, never the first).
* two colors (``title_second_color_share``, 20% of color-mentioning titles, ~12% of items): "Black/White",
  the item's color first and a different color second.
* distractor (``description_distractor_share``, 15% of items, independent of the title): one extra
  description sentence names a color other than the item's ("Pairs well with black jeans.", "Comes with a red
  pouch."), a shade name in a quarter of them.

``true_items()`` keeps ``title_has_color`` (the title names the color, in whatever spelling); the internal
item frame also records ``title_color_form`` (0 plain, 1 shade, 2 code, 3 typo), ``title_second_color_code``
and ``description_distractor_code`` (-1 when absent).

Queries, and the retrieval strategy each type rewards (``Simulator.BEST_STRATEGY``):

* exact (20%): the brand and model name in one of four phrasings (``vocab.EXACT_PHRASINGS``: ``{brand}
  {model}`` 40%, ``{model} {brand}``, ``{brand} {model} {noun}``, ``{model} {noun}`` 20% each, the noun being the
  category's title noun) in mixed casing, a quarter with a one-letter typo in the model name (kept only when the
  brand is in the query, which the typo's resolution needs). The named item is grade 3, the same brand's other
  items of its category grade 1. Lexical wins: BM25 ignores word order, where a memory of query strings has to
  learn every phrasing of every item separately.
* attribute (25%): color, optional material and category of an existing item in one of three word orders
  (``vocab.ATTRIBUTE_PHRASINGS``: ``{color} [{material}] {category}`` 40%, ``{category} {color} [{material}]``,
  ``[{material}] {color} {category}`` 30% each). Items whose TRUE category, color and material match are grade 2
  (3 if high quality). Materials are only in the catalog's columns, so structured search wins (order-free query
  understanding; hidden attributes reward the attributes family). The phrasings exist so that a memory of query
  strings does not catch up with it: with one phrasing the few hundred attribute combinations repeat so often
  that the q2e memory learned them within two weeks and matched structured search (docs/bandit.md).
* thematic (20%): two of one theme's shopper words in a template ("gifts for hiker camper lovers"). Items of
  that theme are graded 1-3 by quality. A vocabulary mismatch: the catalog describes items with the theme's
  catalog words and only ~15% of descriptions also name a shopper word (one of 11), so BM25 finds a handful of a
  theme's items for such a query (and fills the rest of its list with items matching "for" or "and"), while
  embeddings learned from text co-occurrence (``ml/retrieval/semantic.py``: the shopper word shares its
  descriptions with the theme's catalog words) reach the whole theme: semantic retrieval wins. (Until this
  mismatch existed the queries used the catalog words and BM25 matched them as well as the embeddings, so lexical
  earned more, docs/bandit.md.)
* head (35%): ``n_head_queries`` popular short queries ("deals", "new arrivals", ...; Zipf frequencies),
  each mapped to a latent set of ``head_set_size`` initial items (graded 3/2/1 by thirds) that no text
  reveals; only interactions do. Memory (learned query -> item scores) wins.

Shoppers. ``n_users`` users with a device, a locale, an activity level, a price sensitivity, a preferred
theme (half their thematic queries) and three preferred brands. Requests come in sessions (geometric
length, mean 2.5, about 75 s apart) whose start hour follows a daily curve (night trough, evening peak).

Engagements (position-based model). P(click) = position ** -decay(device) x min(0.95, base(grade) x
1.5 if a preferred brand x exp(-1.2 x sensitivity x log(price / category base)) x (0.8 + 0.4 quality)), with
base = 0.02/0.12/0.35/0.65 for grades 0-3. add_to_cart given click and purchase given add_to_cart rise with
quality; 35% of purchases land within the hour after add_to_cart, the rest after an exponential delay (mean
2 days, at least 1 hour, at most 14 days), so purchases often land in later days' partitions.

Determinism. Every draw comes from a ``numpy`` Generator seeded by (seed, stream, day) or from a hash of
(seed, request_id, item_id); no global random state. The same config yields identical frames in any call
order; engagements depend only on the seed and the impressions given.
"""

from ml.sim.config import QUERY_TYPES, SimConfig
from ml.sim.oracle import Oracle, QuerySpec
from ml.sim.simulator import Simulator

__all__ = ["QUERY_TYPES", "Oracle", "QuerySpec", "SimConfig", "Simulator"]
