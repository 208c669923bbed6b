"""MkDocs hook: the command-line reference page, rendered from the ``kerasmtl`` command's own parsers.

A page holding the line ``<!-- cli-reference -->`` gets, in its place, the command list of
``kerasmtl --help`` and one section per subcommand with the text its ``--help`` prints, so
the reference is the parser's and no flag list is copied by hand.
"""

import contextlib
import io
import os
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
ROOT = Path(__file__).resolve().parents[1]


def _help_text(argv: list[str]) -> str:
    """What ``kerasmtl ARGV`` prints, at a fixed width so that the page does not depend on the terminal."""
    import kerasmtl_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            kerasmtl_cli.main(argv)
        except SystemExit as stop:  # argparse exits after --help
            if stop.code not in (0, None):
                raise
    return out.getvalue().rstrip()


def render() -> str:
    """The Markdown of the reference: the overview, then each command's help in a code block."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["COLUMNS"] = "100"
    import kerasmtl_cli

    parts = ["```text\n$ kerasmtl --help\n" + _help_text(["--help"]) + "\n```"]
    for name in kerasmtl_cli.COMMANDS:
        parts.append(f"## kerasmtl {name}\n\n```text\n$ kerasmtl {name} --help\n{_help_text([name, '--help'])}\n```")
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replaces the marker of the reference page with the rendered help texts."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render())
