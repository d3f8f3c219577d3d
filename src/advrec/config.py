"""Where the Hydra configs live: inside the wheel (advrec/conf) or the source checkout."""

from pathlib import Path


def conf_dir() -> str:
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parents[1] / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise RuntimeError("advrec configs not found (expected advrec/conf or <repo>/conf)")


CONF_DIR = conf_dir()
