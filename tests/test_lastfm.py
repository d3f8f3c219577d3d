"""data=lastfm on the real HetRec 2011 file (skipped when it is absent): every user-artist pair
a positive, 80/20 per user, through the real entry point."""

import json

import pandas as pd
import pytest

from tests.helpers import DATA_DIR, needs_data, run_cli

FILE = ("hetrec2011-lastfm-2k", "user_artists.dat")
pytestmark = [needs_data(*FILE), pytest.mark.data]


def test_lastfm_preset_reads_every_pair_and_holds_out_a_fifth_per_user(tmp_path):
    run = tmp_path / "run"
    args = ["data=lastfm", "model=pop", "protocol.val_fraction=0.1", "logger=csv"]
    run_cli("train", *args, f"hydra.run.dir={run}", cwd=tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    raw = pd.read_csv(DATA_DIR.joinpath(*FILE), sep="\t")
    d = m["dataset"]
    assert (d["n_users"], d["n_items"]) == (raw.userID.nunique(), raw.artistID.nunique())
    assert d["n_train"] + d["n_val"] + d["n_test"] == len(raw)
    per_user = raw.groupby("userID").size()
    expected_test = int(per_user.apply(lambda n: min(round(0.2 * n), n - 1)).sum())
    assert d["n_test"] == expected_test  # round(20 %) of each user's artists
    assert 0.0 < m["test/ndcg@20"] < 1.0 and m["data"] == "lastfm"
