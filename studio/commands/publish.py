"""`configi-studio publish OUT org/name [--private]`: upload a converted folder to the Hugging Face Hub."""

from __future__ import annotations

import signal
import sys

from studio.core.formatting import human_bytes


def configure_parser(parser):
    parser.add_argument("folder", help="a folder this studio converted (complete and verified before upload)")
    parser.add_argument("repo", help="the Hub repo to publish to, org/name (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps "
                                                               "its visibility)")


def run(args) -> int:
    from studio.core.cancel import CancelToken
    from studio.core.hub.publish import PublishCancelled, publish

    cancel = CancelToken()

    def show(name: str, done: int, total: int) -> None:
        # One line per weight file; huggingface_hub draws each file's own progress bar under it.
        if name:
            print(f"publishing {name} ({human_bytes(done)} of {human_bytes(total)} done)", file=sys.stderr, flush=True)

    def on_interrupt(signum, frame):
        cancel.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        result = publish(args.folder, args.repo, private=args.private, progress=show, cancel=cancel)
    except PublishCancelled as exc:
        print(f"configi-studio: {exc}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"published {result.files} files ({human_bytes(result.bytes_total)}) to {result.url} "
          f"at commit {result.commit}")
    return 0
