"""Scores comparable across sensors: the query's evidence against a bank of other prompts.

Raw cosines are not comparable across modalities (docs/RANKING.md), and the per-modality
calibration (ranking.py) makes them comparable by giving every modality's best tiles a high
score, whether or not any of them matches the query: in an archive where one sensor answers a
query, the others' best tiles fill the list. The evidence asks the encoder instead, per tile,
whether the query describes it better than other things a tile can show: with the bank B of
prompts below and the logit scale s of the v2 training loss,

    evidence(q, x) = s * cos(q, x) - logsumexp(s * cos(b, x) for b in B, and s * t),

the order of log p(q | x) among the bank, a "none of these" entry at cosine t (`null`, 0.2) and
the query (the softmax the image tower was trained with). A SAR tile that only "a T-72 tank"
explains scores low for "a baseball diamond" however it compares with other SAR tiles. The
"none of these" entry is for tiles that no prompt of the bank describes: without it, a tile far
from every prompt had a small denominator and so a large evidence for any query it matched only
weakly (on the sample index, a DEM tile at cosine 0.12 came first for "bare fields"); with it,
such a tile's evidence is s * (cos(q, x) - t), and it must match the query to rank. Measured against both other rankings in
`training/rank_bench.py` (docs/RANKING.md): best of the three on all four mixed pools.

The bank is the first zero-shot prompt of every class of the v2 training sources (scenes, land
cover, vehicles, ships, floods, damage, terrain, day/night): `training/rank_bench.py` measured
with exactly this list. It is embedded once per encoder by that encoder's text tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANK_SCALE = 30.0   # training/loss.py: the fixed logit scale of the v2 softmax loss
BANK_NULL = 0.2     # the "none of these" entry's cosine (docs/RANKING.md: measured 0.1-0.35)

PROMPT_BANK: tuple[str, ...] = (
    'an aerial image of an airport',
    'an aerial image of bare land',
    'an aerial image of a baseball field',
    'an aerial image of a beach',
    'an aerial image of a bridge over water',
    'an aerial image of a city centre',
    'an aerial image of a church',
    'an aerial image of a commercial area',
    'an aerial image of a dense residential area',
    'an aerial image of a desert',
    'an aerial image of farmland',
    'an aerial image of a forest',
    'an aerial image of an industrial area',
    'an aerial image of a meadow',
    'an aerial image of a medium density residential area',
    'an aerial image of mountains',
    'an aerial image of a park',
    'an aerial image of a parking lot',
    'an aerial image of a playground',
    'an aerial image of a pond',
    'an aerial image of a port with ships',
    'an aerial image of a railway station',
    'an aerial image of a resort',
    'an aerial image of a river',
    'an aerial image of a school',
    'an aerial image of a sparse residential area',
    'an aerial image of a city square',
    'an aerial image of a stadium',
    'an aerial image of storage tanks',
    'an aerial image of a viaduct',
    'an aerial image of agricultural fields',
    'an aerial image of airplanes at an airport',
    'an aerial image of a baseball diamond',
    'an aerial image of buildings',
    'an aerial image of chaparral shrubland',
    'an aerial image of a freeway',
    'an aerial image of a golf course',
    'an aerial image of a harbour with boats',
    'an aerial image of a road intersection',
    'an aerial image of a mobile home park',
    'an aerial image of a highway overpass',
    'an aerial image of an airport runway',
    'an aerial image of a tennis court',
    'a satellite image of forest',
    'a satellite image of industrial buildings',
    'a satellite image of pasture',
    'a satellite image of residential buildings',
    'a satellite image of river',
    'a satellite image of annual crop land',
    'a satellite image of herbaceous vegetation',
    'a satellite image of highway',
    'a satellite image of permanent crop such as orchards or vineyards',
    'a satellite image of sea or lake',
    'an aerial image of a 2S1 self-propelled howitzer',
    'an aerial image of a BMP-2 infantry fighting vehicle',
    'an aerial image of a BRDM-2 armoured reconnaissance vehicle',
    'an aerial image of a BTR-60 armoured personnel carrier',
    'an aerial image of a BTR-70 armoured personnel carrier',
    'an aerial image of a D7 bulldozer',
    'an aerial image of a T-62 tank',
    'an aerial image of a T-72 tank',
    'an aerial image of a ZIL-131 truck',
    'an aerial image of a ZSU-23-4 self-propelled anti-aircraft gun',
    'a satellite image of a flooded area',
    'a satellite image of dry ground with no standing water',
    'a satellite image of buildings flooded or damaged by a hurricane',
    'a satellite image of undamaged buildings',
    'an aerial image of a scene during the day',
    'an aerial image of a scene at night',
    'an aerial image of flat terrain',
    'an aerial image of hilly terrain',
    'an aerial image of mountainous terrain',
    'an aerial image of a steep canyon',
    'a satellite image of a cargo ship',
    'a satellite image of a tanker',
    'a satellite image of a ship of another type',
    'a satellite image of a passenger ship',
    'a satellite image of a tug',
    'a satellite image of a law enforcement vessel',
    'a satellite image of a search and rescue vessel',
)


@dataclass(frozen=True)
class Bank:
    """The bank's prompts embedded by one encoder: (n, d) unit vectors; `null`: the cosine of the
    "none of these" entry (None: no such entry, the first release's evidence)."""

    vectors: np.ndarray
    scale: float = BANK_SCALE
    null: float | None = BANK_NULL

    @classmethod
    def of(cls, encoder) -> "Bank":
        return cls(np.asarray(encoder.encode_text(list(PROMPT_BANK)), np.float32))

    def evidence(self, raw: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """(n,) evidence of the tiles whose cosine with the query is `raw` and whose vectors are
        `vectors` (n, d): s * raw - logsumexp over the bank and the null entry of s * cos."""
        if len(raw) == 0:
            return np.zeros(0, np.float32)
        z = (np.asarray(vectors, np.float32) @ self.vectors.T).astype(np.float64) * self.scale
        if self.null is not None:
            z = np.concatenate([z, np.full((len(z), 1), self.scale * self.null)], 1)
        top = z.max(1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(1))
        return (np.asarray(raw, np.float64) * self.scale - lse).astype(np.float32)
