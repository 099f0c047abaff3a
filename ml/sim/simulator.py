"""The Simulator: catalog events, requests and engagements of a seeded store-search world (see ml/sim)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import ClassVar

import numpy as np
import pandas as pd

from ml.events.schema import DEVICES
from ml.sim import engagement as eng
from ml.sim.catalog import (
    CATEGORY_NAMES,
    STREAM_HEAD,
    STREAM_REQUESTS,
    STREAM_USERS,
    THEME_NAMES,
    US_PER_DAY,
    World,
    catalog_frame,
    day_start_us,
    generate_block,
    true_frame,
    us_to_series,
)
from ml.sim.config import QUERY_TYPES, SimConfig
from ml.sim.oracle import Oracle
from ml.sim.vocab import (
    ATTRIBUTE_PHRASINGS,
    BRANDS,
    CATEGORIES,
    COLORS,
    DEVICE_WEIGHTS,
    EXACT_PHRASINGS,
    HEAD_QUERIES,
    HOUR_WEIGHTS,
    LOCALE_WEIGHTS,
    LOCALES,
    MATERIALS,
    THEMATIC_TEMPLATES,
    THEME_SHOPPER_WORDS,
)

_THEME_SIZE = len(next(iter(THEME_SHOPPER_WORDS.values())))
assert all(len(v) == _THEME_SIZE for v in THEME_SHOPPER_WORDS.values())
_CATEGORY_BASE = np.array([v[1] for v in CATEGORIES.values()])


class Simulator:
    """A seeded, deterministic store-search world with ground truth (``oracle``) and simulated shoppers."""

    # query type -> the retrieval strategy this world makes best for it
    BEST_STRATEGY: ClassVar[dict[str, str]] = {
        "exact": "lexical", "attribute": "structured", "thematic": "semantic", "head": "memory",
    }

    def __init__(self, cfg: SimConfig | None = None) -> None:
        self.cfg = cfg = cfg or SimConfig()
        self.world = World.draw(cfg.seed)
        self._blocks: list[pd.DataFrame] = [generate_block(cfg, self.world, 0)]
        self._items = self._blocks[0]
        self._item_index = pd.Index(self._items["item_id"])
        self.head_queries: tuple[str, ...] = HEAD_QUERIES[: cfg.n_head_queries]
        self._users = self._draw_users()
        self.oracle = Oracle(lambda: self._items, self.head_queries, self._draw_head_sets(), cfg.high_quality)

    # -- world ------------------------------------------------------------------------------------------
    def _draw_users(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, STREAM_USERS])
        n, nb = cfg.n_users, len(BRANDS)
        prefs = np.zeros((n, nb), dtype=bool)
        for u in range(n):
            prefs[u, rng.choice(nb, size=3, replace=False, p=self.world.brand_popularity)] = True
        activity = np.exp(rng.normal(0.0, 0.8, n))
        return {
            "user_id": np.array([f"u{u:05d}" for u in range(n)], dtype=object),
            "device": rng.choice(len(DEVICES), size=n, p=DEVICE_WEIGHTS),
            "locale": rng.choice(len(LOCALES), size=n, p=LOCALE_WEIGHTS),
            "activity": activity / activity.sum(),
            "price_sensitivity": rng.beta(2.0, 2.0, n),
            "preferred_theme": rng.integers(len(THEME_NAMES), size=n),
            "preferred_brands": prefs,
        }

    def _draw_head_sets(self) -> np.ndarray:
        """(head query, initial item) -> grade: a latent set per head query, graded 3/2/1 by thirds."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, STREAM_HEAD])
        grades = np.zeros((len(self.head_queries), cfg.n_items), dtype="int8")
        tiers = 3 - (np.arange(cfg.head_set_size) * 3 // cfg.head_set_size)
        for h in range(len(self.head_queries)):
            grades[h, rng.choice(cfg.n_items, size=cfg.head_set_size, replace=False)] = tiers
        return grades

    def _block_of(self, day: date) -> int:
        k = (day - self.cfg.start).days
        if k < 0:
            raise ValueError(f"{day} is before the simulation start {self.cfg.start}")
        return k

    def _ensure(self, block: int) -> None:
        """Generate item blocks through ``block`` (the simulator's clock only moves forward)."""
        if block < len(self._blocks):
            return
        for k in range(len(self._blocks), block + 1):
            self._blocks.append(generate_block(self.cfg, self.world, k))
        self._items = pd.concat(self._blocks, ignore_index=True)
        self._item_index = pd.Index(self._items["item_id"])

    # -- public frames ----------------------------------------------------------------------------------
    def catalog_events(self, day: date) -> pd.DataFrame:
        """Rows in the ``catalog`` schema for items created on ``day`` (the initial catalog on ``start``)."""
        k = self._block_of(day)
        self._ensure(k)
        return catalog_frame(self._blocks[k])

    def true_items(self, as_of: date | None = None) -> pd.DataFrame:
        """Every item created on or before ``as_of`` (default: every item simulated so far), with all true
        attributes and latent quality, theme, popularity and which catalog attributes are hidden."""
        if as_of is not None:
            self._ensure(self._block_of(as_of))
        frame = true_frame(self._items)
        if as_of is not None:
            frame = frame[frame["created_at"].dt.date <= as_of].reset_index(drop=True)
        return frame

    def users(self) -> pd.DataFrame:
        """The latent shopper population (ground truth; never written as raw events)."""
        u = self._users
        return pd.DataFrame({
            "user_id": u["user_id"],
            "device": np.array(DEVICES, dtype=object)[u["device"]],
            "locale": np.array(LOCALES, dtype=object)[u["locale"]],
            "activity": u["activity"],
            "price_sensitivity": u["price_sensitivity"],
            "preferred_theme": np.array(THEME_NAMES, dtype=object)[u["preferred_theme"]],
            "preferred_brands": [[BRANDS[b] for b in np.flatnonzero(row)] for row in u["preferred_brands"]],
        })

    def requests(self, day: date) -> pd.DataFrame:
        """Rows in the ``requests`` schema for ``day`` plus the ground-truth ``query_type`` column.

        Exactly ``requests_per_day`` rows, sorted by ts, all inside that UTC day; deterministic per
        (seed, day) whatever was simulated before.
        """
        cfg = self.cfg
        k = self._block_of(day)
        self._ensure(k)
        rng = np.random.default_rng([cfg.seed, STREAM_REQUESTS, k])
        n = cfg.requests_per_day
        day0 = day_start_us(day)
        u = self._users

        # sessions: a user, a start drawn from the daily curve, requests a minute or two apart
        lens = rng.geometric(1.0 / max(cfg.session_mean_requests, 1.0), size=max(n, 1))
        cum = np.cumsum(lens)
        n_sess = int(np.searchsorted(cum, n)) + 1 if n else 0
        lens = lens[:n_sess].copy()
        if n_sess:
            lens[-1] -= cum[n_sess - 1] - n
        sess_user = rng.choice(cfg.n_users, size=n_sess, p=u["activity"])
        hours = np.asarray(HOUR_WEIGHTS) / sum(HOUR_WEIGHTS)
        hour_us = 3_600_000_000
        sess_start = rng.choice(24, size=n_sess, p=hours) * hour_us + rng.integers(0, hour_us, n_sess)
        sess = np.repeat(np.arange(n_sess), lens)
        gaps = (rng.exponential(75.0, size=n) * 1e6).astype("int64")
        first = np.r_[0, np.cumsum(lens)[:-1]] if n_sess else np.zeros(0, dtype="int64")
        gaps[first] = 0
        csum = np.cumsum(gaps)
        offset = csum - csum[first][sess] if n else csum
        ts = np.minimum(day0 + sess_start[sess] + offset, day0 + US_PER_DAY - 1)
        user = sess_user[sess]

        # query type and every draw a query text may need (drawn for all rows, so draws never depend on
        # which branch a row takes)
        mix = np.array([cfg.query_mix.get(t, 0.0) for t in QUERY_TYPES])
        qtype = rng.choice(len(QUERY_TYPES), size=n, p=mix / mix.sum())
        zipf = 1.0 / np.arange(1, len(self.head_queries) + 1) ** 0.9
        head_pick = rng.choice(len(self.head_queries), size=n, p=zipf / zipf.sum())
        eligible = np.flatnonzero(self._items["created_us"].to_numpy() <= day0)
        pop = self._items["popularity"].to_numpy()[eligible]
        exact_item = eligible[rng.choice(len(eligible), size=n, p=pop / pop.sum())]
        attr_item = eligible[rng.choice(len(eligible), size=n, p=pop / pop.sum())]
        with_material = rng.random(n) < 0.5
        casing = rng.integers(4, size=n)
        typo = rng.random(n) < cfg.typo_rate
        typo_kind = rng.integers(2, size=n)
        typo_pos = rng.random(n)
        pref_theme = rng.random(n) < 0.5
        theme = np.where(pref_theme, u["preferred_theme"][user], rng.integers(len(THEME_NAMES), size=n))
        wa = rng.integers(_THEME_SIZE, size=n)
        wb = (wa + rng.integers(1, _THEME_SIZE, size=n)) % _THEME_SIZE
        template = rng.integers(len(THEMATIC_TEMPLATES), size=n)
        capital = rng.random(n) < 0.2
        # drawn last, so every draw above is as it was before phrasings existed
        exact_form = rng.choice(len(EXACT_PHRASINGS), size=n, p=[w for _, w in EXACT_PHRASINGS])
        attr_form = rng.choice(len(ATTRIBUTE_PHRASINGS), size=n, p=[w for _, w in ATTRIBUTE_PHRASINGS])

        items = self._items
        names = items["model_name"].to_numpy()
        brand = items["brand_code"].to_numpy()
        cat = items["category_code"].to_numpy()
        color = items["color_code"].to_numpy()
        material = items["material_code"].to_numpy()
        queries = []
        for r in range(n):
            t = QUERY_TYPES[qtype[r]]
            if t == "head":
                q = self.head_queries[head_pick[r]]
            elif t == "exact":
                i = exact_item[r]
                q = self._exact_text(BRANDS[brand[i]], names[i], int(i), casing[r],
                                     typo_kind[r] if typo[r] else -1, typo_pos[r],
                                     EXACT_PHRASINGS[exact_form[r]][0], CATEGORIES[CATEGORY_NAMES[cat[i]]][0])
            elif t == "attribute":
                i = attr_item[r]
                q = ATTRIBUTE_PHRASINGS[attr_form[r]][0].format(
                    c=COLORS[color[i]], t=MATERIALS[material[i]] if with_material[r] else "",
                    g=CATEGORY_NAMES[cat[i]])
                q = " ".join(q.split())
                q = q.capitalize() if capital[r] else q
            else:
                vocab = THEME_SHOPPER_WORDS[THEME_NAMES[theme[r]]]
                q = THEMATIC_TEMPLATES[template[r]].format(a=vocab[wa[r]], b=vocab[wb[r]])
            queries.append(q)

        order = np.argsort(ts, kind="stable")
        stamp = day.strftime("%Y%m%d")
        request_id = np.array([f"r{stamp}-{i:06d}" for i in range(n)], dtype=object)
        ts_sorted = ts[order]
        return pd.DataFrame({
            "event_id": request_id,
            "request_id": request_id,
            "ts": us_to_series(ts_sorted),
            "user_id": u["user_id"][user[order]],
            "session_id": np.array([f"s{stamp}-{s:05d}" for s in sess[order]], dtype=object),
            "query": np.array(queries, dtype=object)[order],
            "device": np.array(DEVICES, dtype=object)[u["device"][user[order]]],
            "locale": np.array(LOCALES, dtype=object)[u["locale"][user[order]]],
            "hour": ((ts_sorted - day0) // 3_600_000_000).astype("int32"),
            "query_type": np.array(QUERY_TYPES, dtype=object)[qtype[order]],
        })

    def _exact_text(self, brand: str, name: str, target: int, casing: int, typo_kind: int,
                    typo_pos: float, phrasing: str = "{b} {m}", noun: str = "") -> str:
        """The brand, the model name and the category noun in a ``phrasing`` (``vocab.EXACT_PHRASINGS``), in one of
        four casings, with an optional one-letter typo in the model name.

        A typo is kept only if the oracle still resolves it to ``target`` (the brand's earliest item within
        one edit, so a phrasing without the brand keeps no typo); typos of interior letters never form a valid
        model name, so this cannot change later.
        """
        model = name
        if typo_kind >= 0 and len(name) >= 5:
            p = 1 + int(typo_pos * (len(name) - 3))          # interior position 1 .. len-3
            if typo_kind == 0:   # swap two adjacent letters
                model = name[:p] + name[p + 1] + name[p] + name[p + 2:]
            else:                # drop a letter
                model = name[:p] + name[p + 1:]
        if casing == 0:
            b, m, n = brand, model.capitalize(), noun
        elif casing == 1:
            b, m, n = brand.lower(), model, noun.lower()
        elif casing == 2:
            b, m, n = brand.upper(), model.upper(), noun.upper()
        else:
            b, m, n = brand.lower(), model.capitalize(), noun.lower()
        text = phrasing.format(b=b, m=m, n=n)
        if model != name and self.oracle.spec(text).target != target:
            return self._exact_text(brand, name, target, casing, -1, 0.0, phrasing, noun)
        return text

    def respond(self, requests: pd.DataFrame, impressions: pd.DataFrame) -> pd.DataFrame:
        """Simulated shoppers' engagements with ``impressions`` (rows in the ``engagements`` schema).

        Position-based model: P(click) = P(examine position | device) * P(click | examined), the latter
        from the oracle grade, the shopper's brand preferences and price sensitivity, and latent quality.
        add_to_cart follows a click, purchase follows add_to_cart after a delay (within the hour, or days
        later). Every draw is keyed by (seed, request_id, item_id), so the output depends only on the seed
        and the inputs. Raises ValueError for an impression of an unknown request.
        """
        cfg = self.cfg
        cols = ["event_id", "request_id", "item_id", "ts", "type"]
        if len(impressions) == 0:
            empty = pd.DataFrame({c: np.array([], dtype=object) for c in cols})
            empty["ts"] = us_to_series(np.zeros(0, dtype="int64"))
            return empty
        req_index = pd.Index(requests["request_id"])
        if not req_index.is_unique:
            raise ValueError("respond: requests have duplicate request_id")
        ri = req_index.get_indexer(impressions["request_id"])
        if (ri < 0).any():
            missing = impressions["request_id"][ri < 0].iloc[0]
            raise ValueError(f"respond: impression of unknown request {missing!r}")
        req_ts = pd.to_datetime(requests["ts"], utc=True)
        req_us = ((req_ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "us")).to_numpy(dtype="int64")
        self._ensure(self._block_of(pd.Timestamp(int(req_us.max()), unit="us").date()))

        # shopper per request (unknown users are neutral)
        users = self._users
        uidx = pd.Index(users["user_id"]).get_indexer(requests["user_id"])[ri]
        known_user = uidx >= 0
        uu = np.where(known_user, uidx, 0)
        dev = pd.Index(DEVICES).get_indexer(requests["device"])[ri]
        decay = np.array([cfg.examination_decay.get(d, 1.0) for d in DEVICES])[np.where(dev >= 0, dev, 0)]
        sens = np.where(known_user, users["price_sensitivity"][uu], 0.5)

        # oracle grade per impression
        qcodes, uniq = pd.factorize(requests["query"].astype(str))
        specs = [self.oracle.spec(q) for q in uniq]
        item_idx = self._item_index.get_indexer(impressions["item_id"])
        grade = self.oracle.grades(specs, qcodes[ri], item_idx).astype("int64")
        known = item_idx >= 0
        ii = np.where(known, item_idx, 0)
        items = self._items
        quality = np.where(known, items["quality"].to_numpy()[ii], 0.5)
        base_price = _CATEGORY_BASE[items["category_code"].to_numpy()[ii]]
        rel_price = np.where(known, np.log(items["price"].to_numpy()[ii] / base_price), 0.0)
        likes_brand = known & known_user & users["preferred_brands"][uu, items["brand_code"].to_numpy()[ii]]

        position = impressions["position"].to_numpy(dtype="float64")
        rid = impressions["request_id"].astype(str).to_numpy()
        iid = impressions["item_id"].astype(str).to_numpy()
        h = eng.hash_keys(rid + ":" + iid, cfg.seed)
        examine = np.maximum(position, 1.0) ** -decay
        attract = np.asarray(cfg.click_by_grade)[grade] * (1.0 + 0.5 * likes_brand) \
            * np.exp(-1.2 * sens * rel_price) * (0.8 + 0.4 * quality)
        click = eng.uniforms(h, eng.CLICK) < examine * np.minimum(attract, 0.95)
        expensive = np.maximum(rel_price, 0.0)
        p_atc = np.clip(0.12 + 0.06 * grade + 0.25 * quality - 0.15 * sens * expensive, 0.02, 0.9)
        atc = click & (eng.uniforms(h, eng.ATC) < p_atc)
        buy = atc & (eng.uniforms(h, eng.PURCHASE) < np.clip(0.3 + 0.35 * quality, 0.05, 0.9))

        def expo(stream: int, mean_us: float) -> np.ndarray:
            return -mean_us * np.log1p(-eng.uniforms(h, stream))

        t_click = req_us[ri] + (2e6 + position * 1.5e6 + expo(eng.CLICK_DELAY, 15e6)).astype("int64")
        t_atc = t_click + 5_000_000 + expo(eng.ATC_DELAY, 60e6).astype("int64")
        fast = eng.uniforms(h, eng.FAST) < cfg.fast_purchase_share
        u_delay = eng.uniforms(h, eng.PURCHASE_DELAY)
        fast_delay = 60e6 + u_delay * 3_540e6
        slow_delay = np.clip(-cfg.purchase_delay_mean_days * US_PER_DAY * np.log1p(-u_delay),
                             3_600e6, cfg.purchase_delay_cap_days * US_PER_DAY)
        t_buy = t_atc + np.where(fast, fast_delay, slow_delay).astype("int64")

        parts = [
            pd.DataFrame({"request_id": rid[mask], "item_id": iid[mask], "ts_us": t[mask], "type": kind})
            for kind, mask, t in (
                ("click", click, t_click), ("add_to_cart", atc, t_atc), ("purchase", buy, t_buy))
        ]
        out = pd.concat(parts, ignore_index=True)
        out["event_id"] = out["request_id"] + ":" + out["item_id"] + ":" + out["type"]
        out["ts"] = us_to_series(out["ts_us"].to_numpy())
        out = out.sort_values(["ts_us", "event_id"], kind="mergesort", ignore_index=True)
        return out[cols]

    def day(self, k: int) -> date:
        """The k-th simulated day (0 = ``start``)."""
        return self.cfg.start + timedelta(days=k)
