"""python -m latent_space_control.reference train --out DIR [--only STAGE]"""

import argparse
from pathlib import Path

from . import models, train


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m latent_space_control.reference", description=train.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    retrain = commands.add_parser("train", help="retrain the reference family from scratch")
    retrain.add_argument("--out", type=Path, required=True, metavar="DIR",
                         help=f"folder for the weights (to replace the shipped ones, name theirs: {models.WEIGHTS})")
    retrain.add_argument("--only", choices=train.STAGES,
                         help="retrain one model; the UNet reuses the VAE and CLIP already in --out")
    args = parser.parse_args()
    train.train(args.out, args.only)


if __name__ == "__main__":
    main()
