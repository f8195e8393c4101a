"""``python -m degradation_synth``: preview the recipes, or list them."""

from __future__ import annotations

import argparse
import sys

from .recipes import BUILTIN_RECIPES, RECIPE_SETS, load_recipes, resolve_recipes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m degradation_synth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser("preview", help="render every recipe on the sample photos as a contact sheet")
    preview.add_argument("--out", default="sheet.png", help="PNG file to write (default: sheet.png)")
    preview.add_argument("--recipes", default=",".join(BUILTIN_RECIPES),
                         help="comma-separated recipe or set names (default: all built-ins)")
    preview.add_argument("--recipe-file", help="YAML file of extra recipes to render instead")
    preview.add_argument("--photos", type=int, default=4, help="number of sample photos (columns)")
    preview.add_argument("--size", type=int, default=192, help="tile side in pixels")
    preview.add_argument("--seed", type=int, default=0)
    commands.add_parser("list", help="print the built-in recipes and recipe sets")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, recipe in BUILTIN_RECIPES.items():
            print(f"{name:28s} {recipe.task:24s} {' -> '.join(step.kind.value for step in recipe.steps)}")
        for name, members in RECIPE_SETS.items():
            print(f"set {name}: {', '.join(members)}")
        return 0

    from .preview import write_preview  # the sample photos are only needed here

    try:
        recipes = list(load_recipes(args.recipe_file).values()) if args.recipe_file else resolve_recipes(args.recipes)
        out = write_preview(args.out, recipes, photos=args.photos, size=args.size, seed=args.seed)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(recipes)} recipes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
