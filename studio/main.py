"""Entry point: `configi-studio [MODEL]` opens the window, `configi-studio CMD ...` runs headless.

Heavy libraries (mlx, Qt) are imported only by the command that needs them, so
`configi-studio inspect` answers fast and the window opens fast.
"""

from __future__ import annotations

import argparse
import sys

from studio import __version__
# Command modules import only light core modules at the top (mlx and Qt inside run()),
# so importing them all here costs little and the import linter sees every edge.
from studio.commands import chat, convert, estimate, evaluate, fit, inspect, publish
from studio.core.errors import StudioError

# Each command lives in its own module with configure_parser(parser) and run(args) -> int.
COMMANDS = {
    "inspect": (inspect, "list the tensors of a model by layer and role"),
    "estimate": (estimate, "exact output size and bits per weight for a policy"),
    "convert": (convert, "convert a model to MLX under a policy"),
    "fit": (fit, "propose the bits that fit a size or a Mac, from measured error"),
    "chat": (chat, "chat with an MLX model in the terminal"),
    "eval": (evaluate, "perplexity, KL divergence and top-1 agreement against a reference"),
    "publish": (publish, "upload a converted folder to the Hugging Face Hub"),
}


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"configi-studio {name}", description=help_text)
    module.configure_parser(parser)
    return parser, module


def _gui_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {help_text}" for name, (_, help_text) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="configi-studio",
        description="Config-I Studio: open a model, paint a bit policy, convert to MLX, chat with it.",
        epilog=f"commands (run headless; `configi-studio CMD -h` for help):\n{commands}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", nargs="?", help="model folder to open (default: the bundled demo model)")
    parser.add_argument("--policy", help="preset name or policy file to start from (default: config-i)")
    parser.add_argument("--screenshot", metavar="PATH", help="render the window offscreen to a PNG and exit")
    parser.add_argument("--version", action="version", version=f"configi-studio {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            parser, module = _command_parser(argv[0])
            return int(module.run(parser.parse_args(argv[1:])) or 0)
        args = _gui_parser().parse_args(argv)
        from studio.views.app import run_app

        return run_app(args)
    except StudioError as exc:
        print(f"configi-studio: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("configi-studio: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; say nothing more.
        sys.stderr.close()
        return 0


def gui_main() -> int:
    return main()


if __name__ == "__main__":
    sys.exit(main())
