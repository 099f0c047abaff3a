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
Descriptions use 3-4 of the item's theme's 11 words plus filler, never a material nor the item's own color
(sometimes another color). The initial catalog (``n_items``) is created at ``start`` 00:00
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

* exact (20%): ``{brand} {model}`` in mixed casing, a quarter with a one-letter typo in the model name.
  The named item is grade 3, the same brand's other items of its category grade 1. Lexical wins.
* attribute (25%): ``{color} [{material}] {category}`` taken from an existing item. Items whose TRUE
  category, color and material match are grade 2 (3 if high quality). Materials are only in the catalog's
  columns, so structured search wins (and hidden attributes reward the attributes family).
* thematic (20%): two words of one theme's vocabulary in a template ("gifts for hiking trail lovers").
  Items of that theme are graded 1-3 by quality. An item's description holds only 3-4 of the 11 words, so
  semantic retrieval (embeddings from text co-occurrence) wins.
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
