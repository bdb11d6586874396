"""``python -m latent_space_control demo --out DIR``: render the demo page."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latent_space_control", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="render the demo page (index.html with images) into a folder")
    demo.add_argument("--out", required=True, help="folder to write index.html and its images into")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import render_demo

        index = render_demo(args.out)
        print(f"demo written to {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
