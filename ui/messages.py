"""How every tab shows a problem: one style, the message escaped, an id a test can find."""

from __future__ import annotations

import html

CSS = ".form-error { color: #b42318; font-weight: 600; white-space: pre-wrap; }\n"


def error_html(message: object, element_id: str = "") -> str:
    """⚠ and the message (which may span lines, e.g. one per bad line of an import)."""
    id_attribute = f' id="{element_id}"' if element_id else ""
    return f'<div class="form-error"{id_attribute}>⚠ {html.escape(str(message))}</div>'
