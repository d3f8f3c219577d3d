"""Where the Hydra configs live: the source checkout's conf/ (editable installs), else the
copy a wheel installs under <prefix>/share/advrec/conf; and advrec's config resolvers."""

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

# ${advrec.repeat:300,2} -> [300, 300]: layer sizes from "units" and "layers" sweep knobs
OmegaConf.register_new_resolver(
    "advrec.repeat", lambda value, times: [value] * int(times), replace=True
)


def _dims(value) -> list[int]:
    """${advrec.dims:"200-600"} -> [200, 600]: layer widths as one categorical sweep value."""
    try:
        return [int(w) for w in str(value).split("-")]
    except ValueError:
        raise ValueError(
            f"{value!r} is not layer widths joined by '-' (e.g. hp.dims=1000 or hp.dims=200-600)"
        ) from None


OmegaConf.register_new_resolver("advrec.dims", _dims, replace=True)

# ${advrec.cwd:} -> the directory advrec was started in. Unlike ${hydra:runtime.cwd} it
# resolves before Hydra is set up, which is when a multirun resolves hydra.sweep.dir
# (Hydra #2247 / #3427: every plain `-m` run crashed on it).
OmegaConf.register_new_resolver("advrec.cwd", os.getcwd, replace=True)


def conf_dir() -> str:
    repo = Path(__file__).resolve().parents[2] / "conf"
    for cand in (repo, Path(sys.prefix) / "share" / "advrec" / "conf"):
        if (cand / "train.yaml").is_file():
            return str(cand)
    raise RuntimeError(f"advrec configs not found (looked in {repo} and {sys.prefix}/share)")


CONF_DIR = conf_dir()
